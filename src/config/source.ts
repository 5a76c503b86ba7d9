/**
 * Where the agent's config comes from. The folder source (lab, single machine) and the
 * controller stream (ControllerConfigSource) both implement this, so the agent wires one and
 * never knows which.
 */
import type { SkeinError } from '../errors.js';
import type { MeshSnapshot } from './model.js';

export interface ConfigSource {
  /**
   * Starts producing snapshots. `onSnapshot` receives every new complete snapshot; `onError`
   * receives a SkeinError whenever the source could not produce one (the caller keeps serving
   * the last good snapshot). Resolves once the first attempt (good or bad) has been reported.
   */
  start(onSnapshot: (snapshot: MeshSnapshot) => void, onError: (err: SkeinError) => void): Promise<void>;
  stop(): Promise<void>;
}
