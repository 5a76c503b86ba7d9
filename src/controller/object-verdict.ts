/**
 * The index's verdict on one object alone: refused by schema, translated as a route or
 * policy, or checked by the config room's translation over the object by itself. Cached per
 * object until its content changes, so a namespace rebuild re-checks only what changed.
 */
import type { SourcedObject } from '../config/kube/objects.js';
import { SERVICE_NAME_LABEL, type TranslateOptions, translate } from '../config/kube/translate.js';
import { messageOf, SkeinError } from '../errors.js';
import { ControllerCode } from './codes.js';
import { groupOf, kindInfo, SKEIN_GROUPS } from './kinds.js';
import type { StoredObject } from './object-store.js';
import { ObjectProblem, type PolicyResource, translatePolicy } from './policy-translate.js';
import type { Refusal } from './resources.js';
import { checkSchema } from './schema.js';

export interface ObjectVerdict {
  json: string;
  refusal?: Omit<Refusal, 'origin' | 'key' | 'object'>;
  policy?: PolicyResource;
  /** The object as it was accepted (what a later refused version falls back to). */
  accepted?: Record<string, unknown>;
  /**
   * Refused, but an earlier version of the same object was accepted: that version keeps
   * serving (bad input loses nothing), until the object is fixed or deleted.
   */
  lastGood?: { obj: Record<string, unknown>; policy?: PolicyResource };
}

export class ObjectVerdicts {
  private readonly cache = new Map<string, ObjectVerdict>();

  constructor(private readonly opts: TranslateOptions) {}

  /** Verdict on one object alone (cached until it changes). */
  of(o: StoredObject): ObjectVerdict {
    const cached = this.cache.get(o.key);
    if (cached && cached.json === o.json) return cached;
    const v: ObjectVerdict = { json: o.json };
    // null means "unset" in a Kubernetes object (a YAML key with no value, `field: null` in an
    // apply); the API server prunes it, and so does the controller before checking anything
    // (a null list or filter crashed translation; found by the translation property test).
    const obj = withoutNulls(o.obj) as Record<string, unknown>;
    // Not String(x): an object member named toString (valid YAML) makes that throw.
    const apiVersion = typeof obj.apiVersion === 'string' ? obj.apiVersion : '';
    const kind = typeof obj.kind === 'string' ? obj.kind : '';
    const info = kindInfo(apiVersion, kind);
    if (!info) {
      if (SKEIN_GROUPS.includes(groupOf(apiVersion))) {
        v.refusal = { field: 'kind', reason: `unknown skein kind ${apiVersion} ${kind}`, code: ControllerCode.Refused };
      }
    } else {
      const problems = checkSchema(obj, info.schema);
      // A spec with required fields cannot be absent: the schema checks required fields only
      // inside a spec that is there (a spec-less PeerAuthentication or BackendTrafficPolicy
      // crashed translation; found by the translation property test).
      const specSchema = info.schema.type === 'object' ? info.schema.fields.spec : undefined;
      if (specSchema?.type === 'object' && specSchema.required?.length && obj.spec == null && problems.length === 0) {
        problems.push({ field: 'spec', reason: `missing (it needs ${specSchema.required.join(', ')})` });
      }
      const first = problems[0];
      if (first) {
        const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem(s))` : '';
        v.refusal = { field: first.field, reason: `${first.reason}${more}`, code: ControllerCode.Refused };
      } else if (info.crd || groupOf(apiVersion) === 'gateway.networking.k8s.io') {
        try {
          v.policy = translatePolicy(obj, o.namespace);
        } catch (err) {
          // Anything else is a skein bug; one object must not take the controller down with it.
          v.refusal =
            err instanceof ObjectProblem
              ? { field: err.field, reason: err.reason, code: ControllerCode.Refused }
              : { field: 'spec', reason: `cannot be translated (${messageOf(err)}); please report this`, code: ControllerCode.TranslationFailed };
        }
      } else {
        v.refusal = this.translateAlone({ ...o, obj });
      }
    }
    if (!v.refusal) v.accepted = obj;
    else if (cached) {
      // A new version refused: the last accepted one (or what an earlier refused version kept) stays.
      const kept = cached.lastGood ?? (cached.accepted ? { obj: cached.accepted, ...(cached.policy ? { policy: cached.policy } : {}) } : undefined);
      if (kept) v.lastGood = kept;
    }
    this.cache.set(o.key, v);
    return v;
  }

  /** Forget an object that is gone. */
  delete(key: string): void {
    this.cache.delete(key);
  }

  /** Runs the config room's translation over the object alone, to catch its field errors. */
  private translateAlone(o: StoredObject): ObjectVerdict['refusal'] {
    const objs: SourcedObject[] = [{ file: o.origin, doc: o.doc, obj: o.obj }];
    if (o.obj.kind === 'EndpointSlice') {
      // A slice is read only for a Service it belongs to: give it one.
      const svc = ((o.obj.metadata as Record<string, unknown>).labels as Record<string, unknown> | undefined)?.[SERVICE_NAME_LABEL];
      if (typeof svc === 'string') {
        objs.push({ file: '(check)', doc: 0, obj: { apiVersion: 'v1', kind: 'Service', metadata: { name: svc, namespace: o.namespace }, spec: {} } });
      }
    }
    try {
      translate(objs, 'check', this.opts);
      return undefined;
    } catch (err) {
      if (err instanceof SkeinError) {
        const d = err.details ?? {};
        return { field: String(d.field ?? '(object)'), reason: String(d.reason ?? err.message), code: err.code };
      }
      throw err;
    }
  }
}

/** A copy without the null members of objects, at any depth (nulls inside lists are kept: they are values there). */
function withoutNulls(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(withoutNulls);
  if (v === null || typeof v !== 'object') return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) if (x !== null) out[k] = withoutNulls(x);
  return out;
}
