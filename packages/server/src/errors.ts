/**
 * The one error catalogue: every expected refusal has a stable code, an HTTP status and
 * a message template. Codes never change meaning; docs/errors.md is checked against
 * this list by a test.
 */
export class TesseraError extends Error {
  constructor(
    readonly code: ErrorCode,
    readonly status: number,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
    this.name = "TesseraError";
  }
}

type Params = Record<string, string | number | boolean | null | undefined>;

interface ErrorDefinition {
  status: number;
  template: string;
}

function defineError(status: number, template: string): ErrorDefinition {
  return { status, template };
}

export const errorCatalogue = {
  VALIDATION_FAILED: defineError(400, "The request is not valid: {problems}"),
  MALFORMED_JSON: defineError(400, "The request body is not valid JSON"),
  BODY_TOO_LARGE: defineError(413, "The request body is larger than {limit} bytes"),
  UNSUPPORTED_MEDIA_TYPE: defineError(415, "Send the request body as application/json"),
  PUSH_SERVICE_NOT_ALLOWED: defineError(400, "Web Push to {endpoint} is not allowed on this server"),
  REQUEST_INCOMPLETE: defineError(400, "The request body ended before the length it declared"),
  MALFORMED_REQUEST: defineError(400, "The request is not well-formed HTTP"),
  PATH_PARAMETER_TOO_LONG: defineError(414, "A part of the path is longer than {limit} characters"),
  HEADERS_TOO_LARGE: defineError(431, "The request headers are too large"),
  REQUEST_TIMEOUT: defineError(408, "The request did not arrive in time"),
  UNAUTHENTICATED: defineError(401, "Authenticate with an API key or a session token (Authorization: Bearer ...)"),
  INVALID_CREDENTIALS: defineError(401, "The email or password is not right"),
  RATE_LIMITED: defineError(429, "Too many failed attempts; try again in {retryAfterSeconds} s"),
  FORBIDDEN: defineError(403, "The {role} role may not {action}"),
  ROUTE_NOT_FOUND: defineError(404, "No route {method} {url}"),
  CURSOR_INVALID: defineError(400, "The cursor is not one this server handed out"),
  VIRTUAL_SERVER_NOT_FOUND: defineError(404, "Virtual server {id} does not exist"),
  VIRTUAL_SERVER_NAME_TAKEN: defineError(409, "A virtual server named {name} already exists under the same parent"),
  SCOPE_ESCALATION: defineError(403, "An operator can only be given a scope inside your own"),
  OPERATOR_NOT_FOUND: defineError(404, "Operator {id} does not exist"),
  OPERATOR_EMAIL_TAKEN: defineError(409, "An operator with email {email} already exists"),
  OPERATOR_SELF_CHANGE: defineError(409, "You cannot change your own role or disable yourself; ask another admin"),
  API_KEY_NOT_FOUND: defineError(404, "API key {id} does not exist"),
  USER_NOT_FOUND: defineError(404, "User {userId} does not exist"),
  USER_EXISTS: defineError(409, "User {userId} already exists in this virtual server"),
  USER_HAS_TOKENS: defineError(409, "User {userId} holds {count} token(s); revoke them first"),
  CSV_INVALID: defineError(400, "The CSV file cannot be read: {problem}"),
  TOKEN_NOT_FOUND: defineError(404, "Token {serial} does not exist"),
  TOKEN_STATE_CONFLICT: defineError(409, "Token {serial} is {state}; {action} needs {allowed}"),
  SERIAL_INVALID: defineError(400, "{serial} is not a valid serial number: {problem}"),
  SERIAL_TAKEN: defineError(409, "Serial {serial} already exists"),
  SEED_FILE_INVALID: defineError(400, "The seed file cannot be imported: {problem}"),
  HARDWARE_SEED_REQUIRED: defineError(400, "Reinitialising hardware token {serial} needs its new seed"),
  NOT_A_CHILD: defineError(409, "Virtual server {child} is not a child of {parent}"),
  CAPACITY_EXCEEDED: defineError(409, "Virtual server {id} may hold {capacity} token(s); it would hold {wanted}"),
  INVENTORY_SHORT: defineError(409, "Only {available} {type} token(s) are in inventory; {wanted} asked for"),
  TOKENS_NOT_MOVABLE: defineError(409, "Only unassigned inventory tokens move; not movable: {serials}"),
  USER_CAPACITY_EXCEEDED: defineError(409, "Virtual server {id} allows {capacity} users with tokens; this would make {wanted}"),
  USER_EMAIL_MISSING: defineError(409, "No email address to send the enrollment to: {userIds}"),
  APPS_NOT_ALLOWED: defineError(409, "The policy allows {allowed}; none of {asked}"),
  STOP_DATE_INVALID: defineError(400, "The stop date must be in the future and at most 365 days away"),
  NO_USERS_SELECTED: defineError(400, "The selection holds no users"),
  TASK_NOT_FOUND: defineError(404, "Provisioning task {id} does not exist"),
  TASK_CANCELLED: defineError(409, "Provisioning task {id} is cancelled"),
  ENROLLMENT_NOT_FOUND: defineError(404, "No open enrollment for {userId} in this task"),
  ENROLLMENT_CODE_INVALID: defineError(404, "This enrollment code cannot be used: unknown, used, replaced or expired"),
  ENROLLMENT_IN_PROGRESS: defineError(409, "Another device is enrolling this token; try again in a few minutes"),
  APP_NOT_ALLOWED: defineError(409, "The {app} app is not allowed for this enrollment"),
  DEVICE_KEY_INVALID: defineError(400, "The {which} public key is not an uncompressed P-256 point"),
  DEVICE_NOT_FOUND: defineError(404, "Device {deviceId} is not known"),
  SIGNATURE_INVALID: defineError(401, "The device signature does not verify ({problem})"),
  ENROLLMENT_OTP_WRONG: defineError(400, "The passcode does not match; check the device's clock and try the next passcode"),
  RULE_EXISTS: defineError(409, "A rule already provisions {type} tokens to group {group}"),
  RULE_NOT_FOUND: defineError(404, "Provisioning rule {id} does not exist"),
  APPLICATION_NOT_FOUND: defineError(404, "Application {id} does not exist"),
  APPLICATION_NAME_TAKEN: defineError(409, "An application named {name} already exists in this virtual server"),
  RESYNC_FAILED: defineError(409, "The two passcodes are not consecutive codes of token {serial} within reach"),
  CHALLENGE_NOT_FOUND: defineError(404, "Challenge {id} does not exist"),
  CHALLENGE_CLOSED: defineError(409, "Challenge {id} is {status}"),
  CHALLENGE_ANSWER_INVALID: defineError(400, "The approval cannot be accepted: {problem}"),
  POLICY_INVALID: defineError(400, "The policy is not valid: {problem}"),
  TEMPLATE_INVALID: defineError(400, "The mail template is not valid: {problem}"),
  INTERNAL: defineError(500, "Something went wrong on the server; the request changed nothing"),
} as const;

export type ErrorCode = keyof typeof errorCatalogue;

function render(template: string, params: Params): string {
  return template.replace(/\{(\w+)\}/g, (_, name: string) => String(params[name] ?? `{${name}}`));
}

/** Makes the catalogued error `code`, its message filled from `params`. */
export function fail(code: ErrorCode, params: Params = {}, details?: unknown): TesseraError {
  const definition = errorCatalogue[code];
  return new TesseraError(code, definition.status, render(definition.template, params), details);
}

/** VALIDATION_FAILED for a list of problems ("field: what is wrong"): in the message, and as `details.problems`. */
export function invalid(problems: string[]): TesseraError {
  return fail("VALIDATION_FAILED", { problems: problems.join("; ") }, { problems });
}
