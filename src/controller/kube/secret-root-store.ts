/**
 * The CA's persisted state in a Kubernetes Secret (every replica reads it; only the lease
 * holder writes it), and a RootStore gate that refuses writes unless this replica leads.
 */
import { SkeinError } from '../../errors.js';
import type { PersistedCaState, RootStore } from '../../identity/ca/root-store.js';
import type { V1Secret } from '@kubernetes/client-node';
import { ControllerCode } from '../codes.js';
import { type KubeClient, kubeErrorOf } from './client.js';

export const CA_SECRET_KEY = 'ca.json';

export class SecretRootStore implements RootStore {
  constructor(
    private readonly client: KubeClient,
    private readonly namespace: string,
    private readonly name = 'skein-ca',
  ) {}

  async load(): Promise<PersistedCaState | undefined> {
    const { client, namespace, name } = this;
    let secret: V1Secret;
    try {
      secret = await client.core.readNamespacedSecret({ name, namespace }, client.options());
    } catch (err) {
      const e = kubeErrorOf(`read secret ${namespace}/${name}`, err);
      if (e.status === 404) return undefined;
      throw e;
    }
    const b64 = secret.data?.[CA_SECRET_KEY];
    if (!b64) return undefined;
    return JSON.parse(Buffer.from(b64, 'base64').toString('utf8')) as PersistedCaState;
  }

  async save(state: PersistedCaState): Promise<void> {
    const { client, namespace, name } = this;
    const body: V1Secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'Opaque',
      metadata: { name: this.name, namespace: this.namespace, labels: { 'app.kubernetes.io/part-of': 'skein' } },
      data: { [CA_SECRET_KEY]: Buffer.from(JSON.stringify(state)).toString('base64') },
    };
    try {
      await client.core.createNamespacedSecret({ namespace, body }, client.options());
    } catch (err) {
      const e = kubeErrorOf(`create secret ${namespace}/${name}`, err);
      if (e.status !== 409) throw e;
      await client.core.replaceNamespacedSecret({ name, namespace, body }, client.options()).catch((err2: unknown) => {
        throw kubeErrorOf(`replace secret ${namespace}/${name}`, err2);
      });
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
