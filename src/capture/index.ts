/** Capture: what the agent uses to steer enrolled pods' traffic into its proxy. */
export type { OriginalDestination } from '../config/address.js';
export { CaptureManager, type CaptureDeps, type CapturedPod, type EnrolledPod, type PodListeners, type PortHeld } from './capture-manager.js';
export { CAPTURE_DEFAULTS, type CaptureOptions, type CapturePod } from './options.js';
export { defaultAddonPath, loadNative, type SkeinNative } from './native.js';
