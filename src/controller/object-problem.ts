/** A refusal raised while translating one object: the field and why. */
export class ObjectProblem extends Error {
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
  }
}

// The objects passed the schema check (kinds.ts) before translation, so their shapes are
// known; reading them through `any` keeps the translations short instead of re-checking
// every field.
// biome-ignore lint/suspicious/noExplicitAny: schema-checked input, see above
export type Any = Record<string, unknown> & { [k: string]: any };

export function strip<T extends Record<string, unknown>>(o: T): T {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
}
