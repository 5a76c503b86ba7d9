/**
 * Does nothing. Used where something must be there but has nothing to do: an 'error'
 * listener on a stream whose errors another stage reports (an emitter without one would
 * crash the process), or a socket method an HTTP/2 stream posing as a socket lacks.
 */
export function noop(): void {}
