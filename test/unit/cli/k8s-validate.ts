/**
 * Validates a Kubernetes object against the API's OpenAPI schema, through the models of the
 * kubernetes-models packages (built-in kinds and CRDs as apiextensions.k8s.io/v1; Gateway
 * API kinds from @kubernetes-models/gateway-api). The model class is found from apiVersion
 * and kind, so a kind without a model is an error, never a silent pass.
 *
 * What these schemas do not say: unknown fields (Kubernetes' OpenAPI allows them) and CEL
 * rules; a live API server would. Types, required fields and enums they do check.
 */
interface ModelClass {
  new (data: unknown): { validate(): void };
}

async function modelOf(apiVersion: string, kind: string): Promise<ModelClass> {
  const mod = apiVersion.startsWith('gateway.networking.k8s.io/')
    ? await import(`@kubernetes-models/gateway-api/${apiVersion}/${kind}`)
    : await import(`kubernetes-models/${apiVersion}/${kind}`);
  const cls = (mod as Record<string, unknown>)[kind] as ModelClass | undefined;
  if (!cls) throw new Error(`no model for ${apiVersion} ${kind}`);
  return cls;
}

/** undefined when valid, else the validator's message. */
export async function k8sProblem(obj: { apiVersion: string; kind: string; [k: string]: unknown }): Promise<string | undefined> {
  const Model = await modelOf(obj.apiVersion, obj.kind);
  try {
    new Model(obj).validate();
    return undefined;
  } catch (err) {
    return String((err as Error).message ?? err);
  }
}
