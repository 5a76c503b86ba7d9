/**
 * The agent's NetnsSocketFactory: sockets capture opens inside a pod's netns with the agent's
 * mark (connect4 leaves them alone, sk_lookup ignores loopback-delivered traffic), connected
 * on the event loop (capture's NetnsConnector: aborts honoured, connects capped per pod).
 */
import type { Duplex } from 'node:stream';
import type { CaptureManager } from '../capture/capture-manager.js';
import type { Workload } from '../config/model.js';
import type { NetnsSocketFactory } from '../proxy/netns-sockets.js';

export class PodSockets implements NetnsSocketFactory {
  /**
   * `netnsOf` says where a pod's netns is on this node (the agent found it; a pod object's
   * own netnsPath, if any, is not trusted); it throws when there is none.
   */
  constructor(
    private readonly capture: CaptureManager,
    private readonly netnsOf: (pod: Workload) => string,
  ) {}

  async connect(pod: Workload, host: string, port: number, signal?: AbortSignal): Promise<Duplex> {
    const s = await this.capture.connectFromAgent(this.netnsOf(pod), host, port, signal ? { signal } : {});
    s.setNoDelay(true); // a proxy hop must not add Nagle's wait to small writes
    return s;
  }
}
