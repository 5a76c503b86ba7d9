/**
 * Stable error codes of the controller room (SKEIN_<AREA>_<CAUSE>). Operators grep logs and alerts
 * for them, so a released code never changes; test/unit/error-codes.test.ts keeps every code
 * of src/ in a codes.ts, once, and listed in the README.
 */
export const ControllerCode = {
  /** A declared object was refused (invalid, or it references what does not exist). */
  Refused: 'SKEIN_CONTROLLER_RESOURCE_REFUSED',
  /** Translating an object threw something other than a field problem (a skein bug): the object is refused, the controller keeps serving. */
  TranslationFailed: 'SKEIN_CONTROLLER_TRANSLATION_FAILED',
  /** Two objects claim the same thing (a VIP:port, a pod IP); the later one is refused. */
  Conflict: 'SKEIN_CONTROLLER_RESOURCE_CONFLICT',
  /** The same object is declared twice. */
  Duplicate: 'SKEIN_CONTROLLER_RESOURCE_DUPLICATE',
  /** A config stream or status call without a credential the controller accepts. */
  Unauthenticated: 'SKEIN_CONTROLLER_UNAUTHENTICATED',
  /** An agent broke the config stream protocol (another node than its credential, an unknown nonce...). */
  ProtocolViolation: 'SKEIN_CONTROLLER_PROTOCOL_VIOLATION',
  /** This replica does not hold the CA lease and may not write the CA state. */
  NotLeader: 'SKEIN_CONTROLLER_NOT_LEADER',
  /** A CA call to a controller that hosts no CA (--no-ca). */
  NoCa: 'SKEIN_CONTROLLER_NO_CA',
  /** A CA rotation step without the operator credential (or the controller has none configured). */
  OperatorRefused: 'SKEIN_CONTROLLER_OPERATOR_REFUSED',
  /** A rotation step is not known, or not possible in the rotation's phase (e.g. retire before activate). */
  RotationStep: 'SKEIN_CONTROLLER_CA_ROTATION_STEP',
  /** A rotation step refused: connected agents have not yet reached what the previous step waits for. */
  RotationNotConverged: 'SKEIN_CONTROLLER_CA_ROTATION_NOT_CONVERGED',
  /** Agents did not converge within skein ca rotate's --timeout; the rotation stopped in a safe state. */
  RotationTimeout: 'SKEIN_CONTROLLER_CA_ROTATION_TIMEOUT',
  /** The CA cannot rotate here: operator-supplied root files, or this replica does not lead. */
  RotationNotRotatable: 'SKEIN_CONTROLLER_CA_NOT_ROTATABLE',
} as const;

export const KubeCode = {
  /** The Kubernetes API server answered a request with an error. */
  ApiRefused: 'SKEIN_KUBE_API_REFUSED',
  /** A watch resumed from a resource version the API server no longer has; the informer relists. */
  ResourceVersionExpired: 'SKEIN_KUBE_RESOURCE_VERSION_EXPIRED',
  /** No API server to talk to: no --kubeconfig, no KUBECONFIG, not in a cluster, no ~/.kube/config. */
  NotInCluster: 'SKEIN_KUBE_NOT_IN_CLUSTER',
  /** The API server could not be asked: no connection, TLS refused (not the cluster CA), timeout, or no credential (exec plugin, token file). */
  ApiUnreachable: 'SKEIN_KUBE_API_UNREACHABLE',
  /** The kubeconfig (--kubeconfig, KUBECONFIG, ~/.kube/config) or the in-cluster files cannot be used. */
  ConfigInvalid: 'SKEIN_KUBE_CONFIG_INVALID',
} as const;
