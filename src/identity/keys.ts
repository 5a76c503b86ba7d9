import { createPrivateKey, createPublicKey, type KeyObject, type webcrypto } from 'node:crypto';
import { SkeinError } from '../errors.js';
import { IdentityCode } from './codes.js';
import { subtle, x509 } from './x509-provider.js';

export type CryptoKey = webcrypto.CryptoKey;
export type CryptoKeyPair = webcrypto.CryptoKeyPair;
type EcKeyGenParams = webcrypto.EcKeyGenParams;
type EcdsaParams = webcrypto.EcdsaParams;
type EcKeyImportParams = webcrypto.EcKeyImportParams;
type RsaHashedImportParams = webcrypto.RsaHashedImportParams;
type Algorithm = webcrypto.Algorithm;

/** ECDSA P-256 with SHA-256: the only workload key and signature algorithm of the mesh. */
export const ECDSA_P256: EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
export const ECDSA_SHA256: EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };

/** A fresh ECDSA P-256 key pair, extractable so it can be handed to Node's TLS as PKCS#8. */
export async function generateP256KeyPair(): Promise<CryptoKeyPair> {
  return (await subtle.generateKey(ECDSA_P256, true, ['sign', 'verify'])) as CryptoKeyPair;
}

/** PKCS#8 PEM of a private CryptoKey (stays in memory; callers must never log or persist it). */
export async function privateKeyToPem(key: CryptoKey): Promise<string> {
  const der = await subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

/** A CSR for exactly one URI SAN (the SPIFFE ID), empty subject, signed with the given keys. */
export async function createWorkloadCsr(identity: string, keys: CryptoKeyPair): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: ECDSA_SHA256,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identity }])],
  });
  return csr.toString('pem');
}

/** Curve name of an EC key as Node reports it ('prime256v1' for P-256), or the key type. */
export function keyKind(key: KeyObject): string {
  if (key.asymmetricKeyType === 'ec') return `ec:${key.asymmetricKeyDetails?.namedCurve ?? '?'}`;
  return key.asymmetricKeyType ?? 'unknown';
}

/** True when the SPKI DER is an ECDSA P-256 public key. */
export function isP256Spki(spkiDer: ArrayBuffer | Uint8Array): boolean {
  try {
    const key = createPublicKey({ key: Buffer.from(spkiDer as ArrayBuffer), format: 'der', type: 'spki' });
    return keyKind(key) === 'ec:prime256v1';
  } catch {
    return false;
  }
}

/** A signing key ready for @peculiar/x509, with the signature algorithm that goes with it. */
export interface SigningKey {
  key: CryptoKey;
  algorithm: Algorithm | EcdsaParams | RsaHashedImportParams;
  /** PKCS#8 PEM (kept to persist a generated root; never logged). */
  pkcs8Pem: string;
  /** Node KeyObject of the public half, to check a certificate matches its key. */
  publicKey: KeyObject;
}

/**
 * Imports an operator- or store-supplied private key (PKCS#8, SEC1 or PKCS#1 PEM): ECDSA
 * P-256/P-384 or RSA. Throws SKEIN_IDENTITY_ROOT_INVALID for anything else.
 */
export async function importSigningKey(pem: string): Promise<SigningKey> {
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey(pem);
  } catch (err) {
    throw new SkeinError(IdentityCode.ROOT_INVALID, 'CA private key is not a readable PEM key', undefined, { cause: err });
  }
  const der = keyObject.export({ type: 'pkcs8', format: 'der' });
  const pkcs8Pem = keyObject.export({ type: 'pkcs8', format: 'pem' }).toString();
  const kind = keyKind(keyObject);
  let importAlg: EcKeyImportParams | RsaHashedImportParams;
  let algorithm: EcdsaParams | RsaHashedImportParams;
  if (kind === 'ec:prime256v1') {
    importAlg = ECDSA_P256 as EcKeyImportParams;
    algorithm = ECDSA_SHA256;
  } else if (kind === 'ec:secp384r1') {
    importAlg = { name: 'ECDSA', namedCurve: 'P-384' };
    algorithm = { name: 'ECDSA', hash: 'SHA-384' };
  } else if (kind === 'rsa') {
    importAlg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
    algorithm = importAlg;
  } else {
    throw new SkeinError(IdentityCode.ROOT_INVALID, `unsupported CA key type ${kind} (want ECDSA P-256/P-384 or RSA)`);
  }
  const key = await subtle.importKey('pkcs8', der, importAlg, false, ['sign']);
  return { key, algorithm, pkcs8Pem, publicKey: createPublicKey(keyObject) };
}
