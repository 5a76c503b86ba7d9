/** Splits a PEM file holding several certificates into one PEM string each. */
export function splitPemBundle(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((p) => `${p}\n`) ?? [];
}
