/**
 * The token lifecycle of DESIGN section 2 as data: each action lists the states it
 * applies to and the state it leads to. Every state change goes through `planAction`,
 * so a refused move is refused the same way everywhere.
 */
export const tokenStates = ["inventory", "assigned", "active", "suspended", "locked", "lost"] as const;
export type TokenState = (typeof tokenStates)[number];

const HELD: TokenState[] = ["assigned", "active", "suspended", "locked"];

export const tokenActions = {
  provision: { from: ["inventory"], to: "assigned" },
  enroll: { from: ["assigned"], to: "active" },
  cancelProvisioning: { from: ["assigned"], to: "inventory" },
  suspend: { from: ["active", "locked"], to: "suspended" },
  reactivate: { from: ["suspended"], to: "active" },
  lock: { from: ["active"], to: "locked" },
  unlock: { from: ["locked"], to: "active" },
  revokeToInventory: { from: HELD, to: "inventory" },
  revokeAsLost: { from: HELD, to: "lost" },
  reinitialize: { from: ["lost"], to: "inventory" },
  delete: { from: ["lost"], to: null },
  /** Allocation moves unassigned tokens between a service provider and a child. */
  allocate: { from: ["inventory"], to: "inventory" },
} as const satisfies Record<string, { from: readonly TokenState[]; to: TokenState | null }>;

export type TokenAction = keyof typeof tokenActions;

export type ActionPlan = { ok: true; to: TokenState | null } | { ok: false; allowed: readonly TokenState[] };

export function planAction(action: TokenAction, from: TokenState): ActionPlan {
  const rule = tokenActions[action];
  return (rule.from as readonly TokenState[]).includes(from) ? { ok: true, to: rule.to } : { ok: false, allowed: rule.from };
}

export function isTokenState(value: string): value is TokenState {
  return (tokenStates as readonly string[]).includes(value);
}
