// tsyringe (inside @peculiar/x509) needs Reflect metadata before it loads.
import './reflect-metadata.js';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

/**
 * @peculiar/x509 needs a WebCrypto provider; Node's own is the one we trust. Set once, on
 * first import of any identity module that builds or parses certificates.
 */
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };
export const subtle = webcrypto.subtle;
