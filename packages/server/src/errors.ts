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
  POLICY_INVALID: defineError(400, "The policy is not valid: {problem}"),
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
