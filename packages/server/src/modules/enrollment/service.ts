import type { CoreDeps } from "../../deps.js";
import { createDeviceEnrollment } from "./device.js";
import { createEnrollmentEngine, type EnrollmentEngine } from "./engine.js";
import { createPageEnrollment } from "./browser-flows.js";

export type { DevicePlatform, OpenEnrollment, SignedRequest } from "./engine.js";
export { CLAIM_TTL_MS, SIGNATURE_SKEW_MS } from "./engine.js";

/** Enrollment: the tessera app's key agreement, and the self-enrollment page's flows. */
export function createEnrollmentService(deps: CoreDeps & { onMailQueued?: () => void }, engine: EnrollmentEngine = createEnrollmentEngine(deps)) {
  return {
    lookup: (code: string) => engine.open(deps.db, code),
    ...createDeviceEnrollment(engine, deps),
    ...createPageEnrollment(engine, deps),
    pushApplications: engine.pushApplications,
  };
}

export type EnrollmentService = ReturnType<typeof createEnrollmentService>;
