import t from 'tap';
import { main } from '../../../src/cli/main.js';
import { captureOutput } from './capture-output.js';

// `skein lab supervise-agent` is routed by main.ts to its own module (one long-lived process per
// lab node need not load the lab); a call without a state file or agent command is refused
// with its usage, before anything is started.
t.test('lab supervise-agent: usage errors exit 2, nothing started', async (t) => {
  for (const argv of [
    ['lab', 'supervise-agent'],
    ['lab', 'supervise-agent', '--state', '/nonexistent/state.json'],
    ['lab', 'supervise-agent', '--state', '/nonexistent/state.json', '--'],
    ['lab', 'supervise-agent', '--backoff-ms', '200', '--', 'true'],
    ['lab', 'supervise-agent', '--state', '/nonexistent/state.json', '--backoff-ms', 'soon', '--', 'true'],
  ]) {
    const { result, err } = await captureOutput(() => main(argv));
    t.equal(result, 2, `${argv.slice(2).join(' ') || '(no args)'}: exit 2`);
    t.match(err, /usage: skein lab supervise-agent --state FILE/, 'prints its usage');
  }
});
