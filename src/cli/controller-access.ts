/**
 * How `skein top` and `skein tap` reach the controller: with --controller, --token-file and
 * --roots (an operator's credential, the same `skein status` uses), or in a lab (--lab ID)
 * by running the same command again inside a node's netns, where the lab's controller is
 * reachable, with that node's token and the lab's roots.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { StatusClientOptions } from '../controller/status-client.js';
import { pemBlocks } from '../identity/x509/pem.js';
import { CONFIG_PORT, meshPaths } from '../lab/mesh.js';
import { resolveLab } from '../lab/registry.js';
import { skeinCommand } from '../paths.js';

export const CONTROLLER_OPTIONS = {
  controller: { type: 'string' },
  'token-file': { type: 'string' },
  roots: { type: 'string' },
  lab: { type: 'string' },
} as const;

export interface ControllerFlags {
  controller?: string;
  'token-file'?: string;
  roots?: string;
  lab?: string;
}

/**
 * The controller to talk to, or the exit code of the command run again in the lab (when no
 * --controller was given). `args` are the command's own flags, passed along.
 */
export function reachController(
  command: string | string[],
  flags: ControllerFlags,
  args: string[],
  usage: string,
  opts: { operator?: boolean } = {},
): StatusClientOptions | number {
  if (!flags.controller) {
    const rec = resolveLab(flags.lab);
    const node = rec.plan.nodes[0]!;
    const paths = meshPaths(rec);
    // The operator's credential where the command changes something (skein ca rotate).
    const tokenFile = opts.operator ? paths.operatorToken : join(paths.tokensDir, node.name);
    const creds = ['--controller', `${rec.plan.underlayGateway}:${CONFIG_PORT}`, '--token-file', tokenFile, '--roots', paths.rootsPem];
    const cmd = Array.isArray(command) ? command : [command];
    const r = spawnSync('ip', ['netns', 'exec', node.netns, ...skeinCommand(), ...cmd, ...creds, ...args], { stdio: 'inherit' });
    return r.status ?? 1;
  }
  if (!flags['token-file'] || !flags.roots) {
    process.stderr.write(usage);
    return 2;
  }
  return {
    address: flags.controller,
    token: readFileSync(flags['token-file'], 'utf8').trim(),
    rootsPem: pemBlocks(readFileSync(flags.roots, 'utf8')),
    serverName: flags.controller.replace(/:\d+$/, ''),
  };
}
