/**
 * Where an accepted connection was going before capture steered it to the agent: for the
 * outbound listener, the record connect4/connect6 left in the original-destination map (read
 * and deleted in one syscall); for the inbound plaintext listener, the socket's own local
 * address (sk_lookup does not rewrite it).
 */
import type { Socket } from 'node:net';
import { SkeinError } from '../errors.js';
import { CaptureCode } from './codes.js';
import { canonicalIp, type OriginalDestination } from '../config/address.js';
import { familyOf } from './ip.js';
import { decodeOrigDst, encodePeerKey, ORIG_DST_SIZE } from './maps.js';
import type { SkeinNative } from './native.js';

/**
 * The destination a pod's connection asked for, for a socket accepted on its outbound
 * listener. The addon and the map are taken lazily: a socket that cannot have a record is
 * refused before either is touched.
 */
export function readOriginalDestination(native: () => SkeinNative, originalByPeerMap: () => number, socket: Socket): OriginalDestination {
  // net.Socket keeps its fd on the libuv handle; Node has no public accessor for it.
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0 || socket.remotePort === undefined || socket.remoteAddress === undefined) {
    throw new SkeinError(CaptureCode.NoOriginalDst, 'socket is not connected (no fd or peer)');
  }
  const cookie = native().socketNetnsCookie(fd);
  const key = encodePeerKey(cookie, socket.remotePort, familyOf(socket.remoteAddress));
  // Hot path (every outbound connection): getsockopt + one lookup-and-delete syscall.
  const value = native().mapLookupAndDelete(originalByPeerMap(), key, ORIG_DST_SIZE);
  if (!value) {
    throw new SkeinError(CaptureCode.NoOriginalDst, 'no original destination recorded for this connection', {
      netnsCookie: cookie.toString(),
      peerPort: socket.remotePort,
    });
  }
  return decodeOrigDst(value);
}

/** The destination of a connection steered to the inbound plaintext listener (its local address). */
export function inboundDestination(socket: Socket): OriginalDestination {
  if (!socket.localAddress || socket.localPort === undefined) {
    throw new SkeinError(CaptureCode.NoOriginalDst, 'socket has no local address');
  }
  const address = canonicalIp(socket.localAddress) ?? socket.localAddress;
  return { address, port: socket.localPort, family: familyOf(address) };
}
