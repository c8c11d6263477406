/**
 * The Check button: save the open notebook, grade it on the Jupyter server (the course's
 * confined engine, POST /autograder/check) and show the feedback in a side panel, each
 * exercise linked to its cell.
 */
import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, ToolbarButton } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

const COMMAND = 'autograder:check';

interface TestResult {
  id: string;
  name: string;
  title?: string;
  points: number;
  max_points: number;
  status: string;
  message: string;
  diagnosis?: string | null;
}

interface Report {
  score: number;
  max_score: number;
  seed: number | null;
  status: string;
  error?: string | null;
  notes: string[];
  tests: TestResult[];
  cell_problems: { cell: string; message: string }[];
}

interface Progress {
  ps: string;
  best: number | null;
  max_score: number;
  best_at: string | null;
  checks: number;
  visible_only_checks: number;
}

interface CheckResult {
  progress: Progress[];
  mode: 'hidden' | 'visible' | 'service';
  hidden_tests_run: boolean;
  problem_set: string;
  report: Report;
  page: string;
}

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text; // never HTML: messages quote student code
  }
  return node;
}

function points(value: number): string {
  return Number.isInteger(value) ? String(value) : value.toFixed(2).replace(/0+$/, '');
}

/** The side panel: what the last check said. */
class FeedbackPanel extends Widget {
  constructor() {
    super();
    this.id = 'autograder-feedback';
    this.title.label = 'Feedback';
    this.title.caption = 'Feedback on your problem set';
    this.title.closable = true;
    this.addClass('jp-AutograderPanel');
    this.node.appendChild(element('p', 'jp-AutograderPanel-hint', 'Press Check on a problem set to see its feedback here.'));
  }

  busy(name: string): void {
    this.node.replaceChildren(element('p', 'jp-AutograderPanel-busy', `Checking ${name}…`));
  }

  failed(message: string): void {
    this.node.replaceChildren(element('p', 'jp-AutograderPanel-error', message));
  }

  showResult(result: CheckResult, notebook: NotebookPanel): void {
    const report = result.report;
    const nodes: HTMLElement[] = [];
    const header = element('div', 'jp-AutograderPanel-header');
    header.appendChild(element('h2', '', result.problem_set));
    const score = element('div', 'jp-AutograderPanel-score', `${points(report.score)} / ${points(report.max_score)}`);
    score.dataset.mode = result.mode;
    header.appendChild(score);
    nodes.push(header);
    if (result.hidden_tests_run) {
      const where = result.mode === 'service' ? "by the course's grading service " : '';
      nodes.push(element('p', 'jp-AutograderPanel-mode', `Checked ${where}with the hidden tests (seed ${report.seed}).`));
    }
    for (const note of report.notes) {
      const kind = result.hidden_tests_run ? 'jp-AutograderPanel-note' : 'jp-AutograderPanel-note jp-AutograderPanel-visibleOnly';
      nodes.push(element('p', kind, note));
    }
    if (report.error) {
      nodes.push(element('p', 'jp-AutograderPanel-error', report.error));
    }
    for (const problem of report.cell_problems) {
      nodes.push(element('p', 'jp-AutograderPanel-error', `${problem.cell}: ${problem.message}`));
    }
    const list = element('ul', 'jp-AutograderPanel-tests');
    for (const test of report.tests) {
      const item = element('li', `jp-AutograderPanel-test jp-mod-${test.status}`);
      item.dataset.testId = test.id;
      const line = element('button', 'jp-AutograderPanel-title');
      line.appendChild(element('span', 'jp-AutograderPanel-name', test.title || test.name));
      line.appendChild(element('span', 'jp-AutograderPanel-points', `${points(test.points)} / ${points(test.max_points)}`));
      line.title = 'Go to the test cell';
      line.onclick = () => goToCell(notebook, test.id);
      item.appendChild(line);
      if (test.status !== 'passed' && test.message) {
        item.appendChild(element('div', 'jp-AutograderPanel-message', test.message));
      }
      if (test.diagnosis) {
        item.appendChild(element('div', 'jp-AutograderPanel-diagnosis', `Likely mistake: ${test.diagnosis}`));
      }
      list.appendChild(item);
    }
    nodes.push(list);
    const details = element('details', 'jp-AutograderPanel-page');
    details.appendChild(element('summary', '', 'The whole feedback page, with its pictures'));
    const frame = element('iframe', '');
    frame.setAttribute('sandbox', ''); // a page of ours, shown without scripts
    frame.srcdoc = result.page;
    details.appendChild(frame);
    nodes.push(details);
    nodes.push(progressTable(result.progress));
    this.node.replaceChildren(...nodes);
  }
}

/** Every problem set's best score so far (checks with the hidden tests). */
function progressTable(rows: Progress[]): HTMLElement {
  const section = element('details', 'jp-AutograderPanel-progress');
  section.open = true;
  section.appendChild(element('summary', '', 'Your progress'));
  const table = element('table', '');
  for (const row of rows) {
    const line = element('tr', '');
    line.dataset.ps = row.ps;
    line.appendChild(element('td', '', row.ps));
    const best =
      row.best !== null
        ? `${points(row.best)} / ${points(row.max_score)}`
        : row.visible_only_checks > 0
          ? 'visible tests only'
          : 'not checked yet';
    line.appendChild(element('td', 'jp-AutograderPanel-best', best));
    line.appendChild(element('td', '', row.best_at ? row.best_at.slice(0, 10) : ''));
    table.appendChild(line);
  }
  section.appendChild(table);
  return section;
}

/** Select and scroll to the cell whose nbgrader id is ``id``. */
function goToCell(notebook: NotebookPanel, id: string): void {
  const cells = notebook.content.widgets;
  for (let index = 0; index < cells.length; index++) {
    const meta = cells[index].model.getMetadata('nbgrader') as { grade_id?: string } | undefined;
    if (meta && meta.grade_id === id) {
      notebook.content.activeCellIndex = index;
      void notebook.content.scrollToItem(index, 'center');
      return;
    }
  }
}

async function check(notebook: NotebookPanel, panel: FeedbackPanel, shell: JupyterFrontEnd.IShell): Promise<void> {
  if (!panel.isAttached) {
    shell.add(panel, 'right', { rank: 600 });
  }
  shell.activateById(panel.id);
  await notebook.context.ready;
  panel.busy(notebook.context.localPath);
  try {
    await notebook.context.save(); // what is on screen is what gets checked
  } catch (error) {
    panel.failed(`The notebook could not be saved, so it was not checked: ${error}`);
    return;
  }
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'autograder', 'check');
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(
      url,
      { method: 'POST', body: JSON.stringify({ path: notebook.context.path }) },
      settings
    );
  } catch (error) {
    panel.failed('The Jupyter server could not be reached, so the notebook was not checked.');
    return;
  }
  let data: any = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok || data === null) {
    panel.failed((data && data.message) || `The check failed (HTTP ${response.status}).`);
    return;
  }
  panel.showResult(data as CheckResult, notebook);
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'autograder-lab:plugin',
  description: 'A Check button that grades the open problem set and shows the feedback beside it.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, ILabShell],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker, palette: ICommandPalette | null) => {
    const panel = new FeedbackPanel();
    app.commands.addCommand(COMMAND, {
      label: 'Check this problem set',
      caption: 'Save the notebook, grade it and show the feedback',
      isEnabled: () => tracker.currentWidget !== null,
      execute: async () => {
        const notebook = tracker.currentWidget;
        if (notebook) {
          await check(notebook, panel, app.shell);
        }
      }
    });
    if (palette) {
      palette.addItem({ command: COMMAND, category: 'Problem sets' });
    }
    app.docRegistry.addWidgetExtension('Notebook', {
      createNew: (notebook: NotebookPanel) => {
        const button = new ToolbarButton({
          className: 'jp-AutograderCheckButton',
          label: 'Check',
          tooltip: 'Save, grade this problem set and show the feedback',
          onClick: () => void check(notebook, panel, app.shell)
        });
        notebook.toolbar.insertItem(10, 'autograderCheck', button);
        return button;
      }
    });
  }
};

export default plugin;
