import { createPrivateKey, randomBytes, sign, type X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { SkeinError } from '../../errors.js';
import { IdentityCode } from '../codes.js';
import { bitString, extension, oid, positiveInteger, seq, subjectOfCertificate, time, tlv } from '../x509/der.js';
import { ECDSA_SHA256, generateP256KeyPair, importSigningKey, privateKeyToPem, type SigningKey } from '../x509/keys.js';
import { derToPem, isSelfSigned, parseCertificates } from '../x509/pem.js';
import { subtle, x509 } from '../x509/provider.js';

/** PEM material of a signing authority: its cert first, up to and including the root. */
export interface AuthorityMaterial {
  certChainPem: string[];
  /** PEM private key of certChainPem[0]. Never logged. */
  privateKeyPem: string;
}

export interface LeafRequest {
  /** SubjectPublicKeyInfo DER of the leaf's key. */
  publicKeySpki: ArrayBuffer;
  uriSans?: string[];
  dnsSans?: string[];
  ipSans?: string[];
  ttlSeconds: number;
  /** notBefore is set this far in the past, for agents whose clock runs behind. */
  backdateSeconds: number;
  now: Date;
}

/** A random positive 128-bit serial (hex), unique with overwhelming probability. */
export function randomSerialHex(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] ?? 1) & 0x7f) | 0x01; // positive, and no leading zero byte to strip
  return bytes.toString('hex');
}

/**
 * One certificate + key able to sign leaves: a self-signed root the CA generated, or an
 * operator-supplied root or intermediate (then its chain up to the root comes with it).
 */
export class SigningAuthority {
  /** Node views of the chain: [signing cert, ...intermediates, root]. */
  readonly chain: X509Certificate[];
  readonly chainPem: string[];
  /** SHA-256 fingerprint of the root: the id of this authority in rotation operations. */
  readonly id: string;
  private readonly signer: x509.X509Certificate;
  private readonly akid: x509.AuthorityKeyIdentifierExtension | undefined;
  private readonly skid: Buffer | undefined;
  /** Raw DER subject of the signing certificate: the issuer of every leaf, byte for byte. */
  private readonly issuerName: Buffer;

  private constructor(
    chain: X509Certificate[],
    private readonly key: SigningKey,
    signer: x509.X509Certificate,
  ) {
    this.chain = chain;
    this.chainPem = chain.map((c) => c.toString());
    this.id = (chain[chain.length - 1] as X509Certificate).fingerprint256;
    this.signer = signer;
    const skid = signer.getExtension(x509.SubjectKeyIdentifierExtension);
    this.akid = skid ? new x509.AuthorityKeyIdentifierExtension(skid.keyId) : undefined;
    this.skid = skid ? Buffer.from(skid.keyId, 'hex') : undefined;
    this.issuerName = subjectOfCertificate(chain[0]?.raw as Buffer);
  }

  get root(): X509Certificate {
    return this.chain[this.chain.length - 1] as X509Certificate;
  }

  get rootPem(): string {
    return this.chainPem[this.chainPem.length - 1] as string;
  }

  /** Chain above the leaf to send with every issued leaf: signing cert .. root. */
  get signingCert(): X509Certificate {
    return this.chain[0] as X509Certificate;
  }

  material(): AuthorityMaterial {
    return { certChainPem: [...this.chainPem], privateKeyPem: this.key.pkcs8Pem };
  }

  /**
   * Loads and checks authority material: the first cert is a CA whose key is the given key,
   * each cert is signed by the next, the last is a self-signed root, all valid at `now`.
   */
  static async fromMaterial(m: AuthorityMaterial, now = new Date()): Promise<SigningAuthority> {
    const chain = parseCertificates(m.certChainPem, IdentityCode.RootInvalid);
    const key = await importSigningKey(m.privateKeyPem);
    const first = chain[0] as X509Certificate;
    if (!first.ca) throw new SkeinError(IdentityCode.RootInvalid, 'CA certificate lacks basicConstraints CA:TRUE');
    if (!first.checkPrivateKey(createPrivateKey(m.privateKeyPem))) {
      throw new SkeinError(IdentityCode.RootInvalid, 'CA private key does not match the CA certificate');
    }
    for (let i = 0; i < chain.length; i++) {
      const c = chain[i] as X509Certificate;
      if (c.validFromDate > now || c.validToDate <= now) {
        throw new SkeinError(IdentityCode.RootInvalid, `CA chain certificate ${i} is not valid now`, { subject: c.subject, notAfter: c.validTo });
      }
      const issuer = chain[i + 1];
      if (issuer) {
        if (!issuer.ca || !c.checkIssued(issuer) || !c.verify(issuer.publicKey)) {
          throw new SkeinError(IdentityCode.RootInvalid, `CA chain certificate ${i} is not signed by certificate ${i + 1}`);
        }
      } else if (!isSelfSigned(c)) {
        throw new SkeinError(IdentityCode.RootInvalid, 'CA chain does not end in a self-signed root; append the root to the chain file');
      }
    }
    return new SigningAuthority(chain, key, new x509.X509Certificate(first.raw));
  }

  /** A new self-signed ECDSA P-256 root for `trustDomain`. */
  static async generateRoot(opts: { trustDomain: string; ttlSeconds?: number; now?: Date }): Promise<SigningAuthority> {
    const now = opts.now ?? new Date();
    const keys = await generateP256KeyPair();
    // The subject carries the creation time so two roots of one trust domain (during a
    // rotation) are told apart by name as well as by key id.
    const name = `O=${escapeDn(opts.trustDomain)}, CN=skein root CA ${now.toISOString()}`;
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerialHex(),
      name,
      notBefore: new Date(now.getTime() - 60_000),
      notAfter: new Date(now.getTime() + (opts.ttlSeconds ?? 10 * 365 * 24 * 3600) * 1000),
      signingAlgorithm: ECDSA_SHA256,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, 1, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    return SigningAuthority.fromMaterial({ certChainPem: [cert.toString('pem')], privateKeyPem: await privateKeyToPem(keys.privateKey) }, now);
  }

  /** Signs a leaf; returns its PEM. notAfter never passes the signing cert's own notAfter. */
  async signLeaf(req: LeafRequest): Promise<string> {
    // X.509 times have whole seconds: notBefore rounds down and notAfter up, so a leaf is
    // never valid for less than asked (it matters for short TTLs).
    const notBefore = new Date(Math.floor((req.now.getTime() - req.backdateSeconds * 1000) / 1000) * 1000);
    const wanted = Math.ceil((req.now.getTime() + req.ttlSeconds * 1000) / 1000) * 1000;
    const notAfter = new Date(Math.min(wanted, this.signingCert.validToDate.getTime()));
    if (!req.dnsSans?.length && !req.ipSans?.length) return this.signWorkloadLeaf(req, notBefore, notAfter);
    const names: x509.JsonGeneralName[] = [
      ...(req.uriSans ?? []).map((value) => ({ type: 'url' as const, value })),
      ...(req.dnsSans ?? []).map((value) => ({ type: 'dns' as const, value })),
      ...(req.ipSans ?? []).map((value) => ({ type: 'ip' as const, value })),
    ];
    const extensions: x509.Extension[] = [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false),
      // The subject is empty, so the SAN must be critical (RFC 5280 4.2.1.6).
      new x509.SubjectAlternativeNameExtension(names, true),
    ];
    if (this.akid) extensions.push(this.akid);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerialHex(),
      issuer: this.signer.subjectName,
      notBefore,
      notAfter,
      publicKey: req.publicKeySpki,
      signingKey: this.key.key,
      signingAlgorithm: this.key.algorithm,
      extensions,
    });
    return cert.toString('pem');
  }

  /**
   * The workload leaf (URI SANs only), DER built directly and signed with crypto.sign: same
   * content as the generic path (see signLeaf), several times faster. Empty subject, so the
   * SAN is critical (RFC 5280 4.2.1.6).
   */
  private signWorkloadLeaf(req: LeafRequest, notBefore: Date, notAfter: Date): string {
    const sanNames = (req.uriSans ?? []).map((u) => tlv(0x86, Buffer.from(u, 'utf8')));
    const extensions = [
      extension('2.5.29.19', true, seq()), // basicConstraints: CA false
      extension('2.5.29.15', true, bitString7(0x80)), // keyUsage: digitalSignature
      extension('2.5.29.37', false, seq(oid('1.3.6.1.5.5.7.3.1'), oid('1.3.6.1.5.5.7.3.2'))), // serverAuth, clientAuth
      extension('2.5.29.17', true, seq(...sanNames)),
    ];
    if (this.skid) extensions.push(extension('2.5.29.35', false, seq(tlv(0x80, this.skid))));
    const tbs = seq(
      tlv(0xa0, Buffer.from([0x02, 0x01, 0x02])), // version v3
      positiveInteger(Buffer.from(randomSerialHex(), 'hex')),
      this.key.signatureAlgorithmDer,
      this.issuerName,
      seq(time(notBefore), time(notAfter)),
      seq(), // empty subject
      Buffer.from(req.publicKeySpki),
      tlv(0xa3, seq(...extensions)),
    );
    const signature = sign(this.key.nodeHash, tbs, this.key.privateKey);
    return derToPem(seq(tbs, this.key.signatureAlgorithmDer, bitString(signature)));
  }

  /** A serving certificate (and fresh key) for a TLS server, e.g. the CA's own gRPC endpoint. */
  async issueServingCertificate(opts: { sans: string[]; ttlSeconds: number; now?: Date }): Promise<{ certChainPem: string; privateKeyPem: string }> {
    const keys = await generateP256KeyPair();
    const spki = await subtle.exportKey('spki', keys.publicKey);
    const leaf = await this.signLeaf({
      publicKeySpki: spki,
      dnsSans: opts.sans.filter((s) => isIP(s) === 0),
      ipSans: opts.sans.filter((s) => isIP(s) !== 0),
      ttlSeconds: opts.ttlSeconds,
      backdateSeconds: 60,
      now: opts.now ?? new Date(),
    });
    const intermediates = this.chainPem.slice(0, -1);
    return { certChainPem: [leaf, ...intermediates].join(''), privateKeyPem: await privateKeyToPem(keys.privateKey) };
  }
}

function escapeDn(v: string): string {
  return v.replace(/([,+"\\<>;=])/g, '\\$1');
}

/** A KeyUsage BIT STRING with one byte of flags (bit 0 = digitalSignature = 0x80); 7 unused bits. */
function bitString7(flags: number): Buffer {
  return tlv(0x03, Buffer.from([0x07, flags]));
}
