import { fail } from "../../errors.js";

export const roles = ["admin", "operator", "helpdesk", "auditor"] as const;
export type Role = (typeof roles)[number];

/**
 * What each role may do, in one table. Scope is checked separately: an object outside
 * the operator's scope is "not found", so an operator never learns it exists.
 */
export const permissions = {
  "virtualServers.read": ["admin", "operator", "helpdesk", "auditor"],
  "virtualServers.manage": ["admin"],
  "operators.read": ["admin", "operator", "auditor"],
  "operators.manage": ["admin"],
  "users.read": ["admin", "operator", "helpdesk", "auditor"],
  "users.manage": ["admin", "operator"],
  "tokens.read": ["admin", "operator", "helpdesk", "auditor"],
  /** Add, import, allocate, reinitialise, delete. */
  "tokens.manage": ["admin", "operator"],
  /** Suspend, reactivate, unlock, revoke: what a helpdesk does on the phone. */
  "tokens.support": ["admin", "operator", "helpdesk"],
  "policy.read": ["admin", "operator", "helpdesk", "auditor"],
  "policy.manage": ["admin"],
  "audit.read": ["admin", "operator", "auditor"],
  "applications.read": ["admin", "operator", "auditor"],
  "applications.manage": ["admin"],
} as const satisfies Record<string, readonly Role[]>;

export type Permission = keyof typeof permissions;

/** Who is acting: an operator through the API, or the local installer through the CLI. */
export interface Principal {
  kind: "operator" | "installer" | "system";
  operatorId: string | null;
  /** Shown in the audit trail. */
  actor: string;
  role: Role;
  scope: { virtualServerId: string | null; path: string; includesChildren: boolean };
}

/** Tessera itself: expiry sweeps, rules applied on group changes. */
export const systemPrincipal: Principal = {
  kind: "system",
  operatorId: null,
  actor: "system",
  role: "admin",
  scope: { virtualServerId: null, path: "/", includesChildren: true },
};

/** The CLI runs on the server's own machine with its database: it acts as installer over everything. */
export const installerPrincipal: Principal = {
  kind: "installer",
  operatorId: null,
  actor: "installer",
  role: "admin",
  scope: { virtualServerId: null, path: "/", includesChildren: true },
};

export function canSee(principal: Principal, virtualServer: { path: string }): boolean {
  const { path, includesChildren } = principal.scope;
  return virtualServer.path === path || (includesChildren && virtualServer.path.startsWith(path));
}

export function hasPermission(principal: Principal, permission: Permission): boolean {
  return (permissions[permission] as readonly Role[]).includes(principal.role);
}

export function requirePermission(principal: Principal, permission: Permission): void {
  if (!hasPermission(principal, permission)) {
    throw fail("FORBIDDEN", { role: principal.role, action: permission.replace(".", " ") });
  }
}
