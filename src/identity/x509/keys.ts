import { createPrivateKey, createPublicKey, type KeyObject, type webcrypto } from 'node:crypto';
import { SkeinError } from '../../errors.js';
import { IdentityCode } from '../codes.js';
import { subtle, x509 } from './provider.js';

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

/** The public key of an SPKI DER when it is ECDSA P-256, else undefined. */
export function p256KeyOf(spkiDer: ArrayBuffer | Uint8Array): KeyObject | undefined {
  try {
    const key = createPublicKey({ key: Buffer.from(spkiDer as ArrayBuffer), format: 'der', type: 'spki' });
    return keyKind(key) === 'ec:prime256v1' ? key : undefined;
  } catch {
    return undefined;
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
  /** Node KeyObject of the private half, for signing with crypto.sign (the fast path). */
  privateKey: KeyObject;
  /** Digest for crypto.sign and the DER AlgorithmIdentifier of the signature. */
  nodeHash: 'sha256' | 'sha384';
  signatureAlgorithmDer: Buffer;
}

// AlgorithmIdentifier DER: ecdsa-with-SHA256, ecdsa-with-SHA384 (no parameters, RFC 5758),
// sha256WithRSAEncryption (NULL parameters, RFC 4055).
const ECDSA_SHA256_DER = Buffer.from('300a06082a8648ce3d040302', 'hex');
const ECDSA_SHA384_DER = Buffer.from('300a06082a8648ce3d040303', 'hex');
const RSA_SHA256_DER = Buffer.from('300d06092a864886f70d01010b0500', 'hex');

/**
 * Imports an operator- or store-supplied private key (PKCS#8, SEC1 or PKCS#1 PEM): ECDSA
 * P-256/P-384 or RSA. Throws SKEIN_IDENTITY_ROOT_INVALID for anything else.
 */
export async function importSigningKey(pem: string): Promise<SigningKey> {
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey(pem);
  } catch (err) {
    throw new SkeinError(IdentityCode.RootInvalid, 'CA private key is not a readable PEM key', undefined, { cause: err });
  }
  const der = keyObject.export({ type: 'pkcs8', format: 'der' });
  const pkcs8Pem = keyObject.export({ type: 'pkcs8', format: 'pem' }).toString();
  const kind = keyKind(keyObject);
  let importAlg: EcKeyImportParams | RsaHashedImportParams;
  let algorithm: EcdsaParams | RsaHashedImportParams;
  let nodeHash: 'sha256' | 'sha384' = 'sha256';
  let signatureAlgorithmDer = ECDSA_SHA256_DER;
  if (kind === 'ec:prime256v1') {
    importAlg = ECDSA_P256 as EcKeyImportParams;
    algorithm = ECDSA_SHA256;
  } else if (kind === 'ec:secp384r1') {
    importAlg = { name: 'ECDSA', namedCurve: 'P-384' };
    algorithm = { name: 'ECDSA', hash: 'SHA-384' };
    nodeHash = 'sha384';
    signatureAlgorithmDer = ECDSA_SHA384_DER;
  } else if (kind === 'rsa') {
    importAlg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
    algorithm = importAlg;
    signatureAlgorithmDer = RSA_SHA256_DER;
  } else {
    throw new SkeinError(IdentityCode.RootInvalid, `unsupported CA key type ${kind} (want ECDSA P-256/P-384 or RSA)`);
  }
  const key = await subtle.importKey('pkcs8', der, importAlg, false, ['sign']);
  return { key, algorithm, pkcs8Pem, publicKey: createPublicKey(keyObject), privateKey: keyObject, nodeHash, signatureAlgorithmDer };
}
