/**
 * The CA's persisted state in a Kubernetes Secret (every replica reads it; only the lease
 * holder writes it), and a RootStore gate that refuses writes unless this replica leads.
 */
import { SkeinError } from '../../errors.js';
import type { PersistedCaState, RootStore } from '../../identity/ca/root-store.js';
import { KubeApiError, type KubeClient } from './client.js';
import { ControllerCode } from '../codes.js';

export const CA_SECRET_KEY = 'ca.json';

export class SecretRootStore implements RootStore {
  constructor(
    private readonly client: KubeClient,
    private readonly namespace: string,
    private readonly name = 'skein-ca',
  ) {}

  private path(name?: string): string {
    const base = `/api/v1/namespaces/${this.namespace}/secrets`;
    return name ? `${base}/${name}` : base;
  }

  async load(): Promise<PersistedCaState | undefined> {
    let secret: { data?: Record<string, string> };
    try {
      secret = await this.client.request('GET', this.path(this.name));
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 404) return undefined;
      throw err;
    }
    const b64 = secret.data?.[CA_SECRET_KEY];
    if (!b64) return undefined;
    return JSON.parse(Buffer.from(b64, 'base64').toString('utf8')) as PersistedCaState;
  }

  async save(state: PersistedCaState): Promise<void> {
    const body = {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'Opaque',
      metadata: { name: this.name, namespace: this.namespace, labels: { 'app.kubernetes.io/part-of': 'skein' } },
      data: { [CA_SECRET_KEY]: Buffer.from(JSON.stringify(state)).toString('base64') },
    };
    try {
      await this.client.request('POST', this.path(), body);
    } catch (err) {
      if (!(err instanceof KubeApiError && err.status === 409)) throw err;
      await this.client.request('PUT', this.path(this.name), body);
    }
  }
}

/** Writes only while `isLeader()`; reads always. */
export class LeaderGatedRootStore implements RootStore {
  constructor(
    private readonly inner: RootStore,
    private readonly isLeader: () => boolean,
  ) {}

  load(): Promise<PersistedCaState | undefined> {
    return this.inner.load();
  }

  async save(state: PersistedCaState): Promise<void> {
    if (!this.isLeader()) {
      throw new SkeinError(ControllerCode.NotLeader, 'this controller replica does not hold the CA lease; it may not write the CA state');
    }
    await this.inner.save(state);
  }
}
