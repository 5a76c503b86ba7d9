/**
 * The agent's folder mode (`skein agent --config-folder DIR`, one machine, no controller):
 * the controller's own translation, validation and index run in the agent's process, so a
 * folder gives the agent exactly what a controller would stream it — workloads, Services,
 * routes and policies, the same refusals — and there is no second, policy-less translation.
 * Each index update becomes one ControlledMeshSnapshot of what applies to this node.
 */
import type { SkeinError } from '../errors.js';
import type { MeshSnapshot } from '../config/model.js';
import { assembleSnapshot } from '../config/controller-source.js';
import type { ConfigSource } from '../config/source.js';
import { type Logger, silentLogger } from '../telemetry/log.js';
import { entryAppliesTo } from './config-server.js';
import { FolderSource } from './folder-source.js';
import { MeshIndex } from './mesh-index.js';
import { ObjectStore } from './object-store.js';

export interface LocalControllerSourceOptions {
  dir: string;
  /** The node this agent serves (its workloads and the policies that apply to them). */
  node: string;
  trustDomain?: string;
  clusterDomain?: string;
  /** Policies here apply mesh-wide. Default skein-system. */
  rootNamespace?: string;
  /** Full rescan period (ms; renames that inotify misses). Default 10000. */
  rescanMs?: number;
  logger?: Logger;
}

export class LocalControllerSource implements ConfigSource {
  private readonly log: Logger;
  private index: MeshIndex | undefined;
  private folder: FolderSource | undefined;
  private lastRefusals = '';

  constructor(private readonly opts: LocalControllerSourceOptions) {
    this.log = (opts.logger ?? silentLogger()).child({ component: 'local-controller', dir: opts.dir });
  }

  async start(onSnapshot: (snapshot: MeshSnapshot) => void, _onError: (err: SkeinError) => void): Promise<void> {
    const store = new ObjectStore();
    const index = new MeshIndex(store, {
      ...(this.opts.trustDomain ? { trustDomain: this.opts.trustDomain } : {}),
      ...(this.opts.clusterDomain ? { clusterDomain: this.opts.clusterDomain } : {}),
      ...(this.opts.rootNamespace ? { rootNamespace: this.opts.rootNamespace } : {}),
    });
    this.index = index;
    this.folder = new FolderSource(store, { dir: this.opts.dir, rescanMs: this.opts.rescanMs ?? 10_000, logger: this.log });
    index.onUpdate(() => onSnapshot(this.snapshot(index)));
    await this.folder.start();
    await index.settled();
    onSnapshot(this.snapshot(index));
  }

  /** What applies to this node, as the controller would stream it; refusals are logged. */
  private snapshot(index: MeshIndex): MeshSnapshot {
    const held = new Map<string, { type: string; version: string; value: unknown }>();
    for (const [k, e] of index.entries()) {
      if (entryAppliesTo(index, e, this.opts.node)) held.set(k, { type: e.type, version: e.version, value: JSON.parse(e.json) });
    }
    const refusals = index.refusals();
    const text = refusals.map((r) => `${r.object}|${r.field}|${r.reason}`).join('\n');
    if (text !== this.lastRefusals) {
      this.lastRefusals = text;
      for (const r of refusals) this.log.warn({ object: r.object, origin: r.origin, field: r.field, reason: r.reason, code: r.code }, 'resource refused; left out of the config');
    }
    return assembleSnapshot(held, index.version, index.trustDomain, index.clusterDomain);
  }

  async stop(): Promise<void> {
    await this.folder?.stop();
    this.index?.close();
  }
}
