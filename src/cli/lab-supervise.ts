/**
 * `skein lab supervise-agent --state FILE --backoff-ms N -- AGENT COMMAND...`: internal, the
 * lab's kubelet for one agent (lab/agent-supervisor.ts), started by `lab up`. Its own module,
 * imported alone by main.ts: one supervisor runs per lab node for the lab's whole life, and
 * it needs none of the rest of the lab (scenario, netns, Kubernetes objects).
 */
import { parseArgs } from 'node:util';
import { runAgentSupervisor } from '../lab/agent-supervisor.js';

export const SUPERVISE_USAGE = 'usage: skein lab supervise-agent --state FILE --backoff-ms N -- AGENT COMMAND...\n';

export async function superviseAgentCommand(argv: string[]): Promise<number> {
  const dashdash = argv.indexOf('--');
  if (dashdash < 0) {
    process.stderr.write(SUPERVISE_USAGE);
    return 2;
  }
  const { values } = parseArgs({
    args: argv.slice(0, dashdash),
    options: { state: { type: 'string' }, 'backoff-ms': { type: 'string' }, lab: { type: 'string' } },
  });
  const backoffBaseMs = Number(values['backoff-ms'] ?? 10_000);
  const command = argv.slice(dashdash + 1);
  if (!values.state || command.length === 0 || !Number.isFinite(backoffBaseMs) || backoffBaseMs < 0) {
    process.stderr.write(SUPERVISE_USAGE);
    return 2;
  }
  return runAgentSupervisor({ stateFile: values.state, backoffBaseMs, command });
}
