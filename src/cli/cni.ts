/**
 * `skein cni install|uninstall`: puts skein-cni on a node (the DaemonSet's init container runs
 * it) — the binary into the CNI bin dir, skein-cni chained last into the node's conflist — or
 * takes both away. Idempotent; a malformed conflist is refused (file, field, reason), never
 * rewritten.
 */
import { parseArgs } from 'node:util';
import { DEFAULT_CNI_SOCKET } from '../agent/cni-server.js';
import { DEFAULT_CNI_BIN_DIR, DEFAULT_CNI_CONF_DIR, installCni, uninstallCni } from '../capture/cni-install.js';
import { repoPath } from '../paths.js';

const USAGE = `usage: skein cni install [--bin-dir DIR] [--conf-dir DIR] [--agent-socket PATH] [--binary FILE]
                         [--timeout-ms N] [--exclude-namespace NS]...
       skein cni uninstall [--bin-dir DIR] [--conf-dir DIR]

  install    copy skein-cni into --bin-dir and chain it last into the first *.conflist of
             --conf-dir (the node's pod network must be installed first)
  uninstall  remove skein-cni from every conflist of --conf-dir and its binary from --bin-dir

  --bin-dir DIR          CNI plugin binaries (default ${DEFAULT_CNI_BIN_DIR})
  --conf-dir DIR         CNI network configurations (default ${DEFAULT_CNI_CONF_DIR})
  --agent-socket PATH    the agent's --cni-socket (default ${DEFAULT_CNI_SOCKET})
  --binary FILE          the skein-cni to copy (default build/cni/skein-cni of this checkout)
  --timeout-ms N         how long skein-cni waits for the agent (default 30000)
  --exclude-namespace NS pods of NS never wait for the agent (repeatable; e.g. kube-system)`;

export async function cniCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const { values } = parseArgs({
    args: rest,
    options: {
      'bin-dir': { type: 'string', default: DEFAULT_CNI_BIN_DIR },
      'conf-dir': { type: 'string', default: DEFAULT_CNI_CONF_DIR },
      'agent-socket': { type: 'string', default: DEFAULT_CNI_SOCKET },
      binary: { type: 'string' },
      'timeout-ms': { type: 'string' },
      'exclude-namespace': { type: 'string', multiple: true },
      help: { type: 'boolean', default: false },
    },
  });
  if ((sub !== 'install' && sub !== 'uninstall') || values.help) {
    process.stdout.write(`${USAGE}\n`);
    return values.help ? 0 : 2;
  }
  const binDir = values['bin-dir']!;
  const confDir = values['conf-dir']!;
  if (sub === 'uninstall') {
    const r = uninstallCni({ binDir, confDir });
    process.stdout.write(
      r.conflists.length || r.binaryRemoved
        ? `skein-cni removed${r.conflists.length ? ` from ${r.conflists.join(', ')}` : ''}${r.binaryRemoved ? ` (binary gone from ${binDir})` : ''}\n`
        : `skein-cni was not installed in ${confDir} / ${binDir}: nothing to do\n`,
    );
    return 0;
  }
  const timeoutMs = values['timeout-ms'] === undefined ? undefined : Number(values['timeout-ms']);
  if (timeoutMs !== undefined && !(Number.isInteger(timeoutMs) && timeoutMs > 0)) {
    process.stderr.write(`--timeout-ms must be a whole number of ms above 0\n${USAGE}\n`);
    return 2;
  }
  const r = installCni({
    binDir,
    confDir,
    binary: values.binary ?? repoPath('build', 'cni', 'skein-cni'),
    agentSocket: values['agent-socket']!,
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    ...(values['exclude-namespace']?.length ? { excludeNamespaces: values['exclude-namespace'] } : {}),
  });
  process.stdout.write(`skein-cni ${r.changed ? 'chained last into' : 'already chained into'} ${r.conflist}; binary ${r.binary}\n`);
  return 0;
}
