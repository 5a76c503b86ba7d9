/**
 * The agent's NetnsSocketFactory: sockets capture opens inside a pod's netns with the agent's
 * mark (connect4 leaves them alone, sk_lookup ignores loopback-delivered traffic), connected
 * on the event loop (capture's NetnsConnector: aborts honoured, connects capped per pod).
 */
import type { Duplex } from 'node:stream';
import type { CaptureManager } from '../capture/capture-manager.js';
import type { Workload } from '../config/model.js';
import { SkeinError } from '../errors.js';
import type { NetnsSocketFactory } from '../proxy/netns-sockets.js';
import { AgentCode } from './codes.js';

export class PodSockets implements NetnsSocketFactory {
  constructor(private readonly capture: CaptureManager) {}

  async connect(pod: Workload, host: string, port: number, signal?: AbortSignal): Promise<Duplex> {
    if (!pod.netnsPath) throw new SkeinError(AgentCode.NoNetns, `pod ${pod.namespace}/${pod.name} has no known netns`);
    const s = await this.capture.connectFromAgent(pod.netnsPath, host, port, signal ? { signal } : {});
    s.setNoDelay(true); // a proxy hop must not add Nagle's wait to small writes
    return s;
  }
}
