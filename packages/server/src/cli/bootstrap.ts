import { randomBytes } from "node:crypto";
import type { Services } from "../core.js";
import { installerPrincipal, type Principal } from "../modules/operators/access.js";

export interface BootstrapResult {
  virtualServerId: string;
  virtualServerName: string;
  operatorId: string;
  operatorEmail: string;
  password: string;
  apiKey: string;
}

/** A password people can type: 20 characters of an unambiguous alphabet (about 100 bits). */
export function newPassword(): string {
  const alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  return Array.from(randomBytes(20), (byte) => alphabet[byte % alphabet.length]).join("");
}

/**
 * The first virtual server (a service provider: its admin's scope includes the children
 * it will create) and its admin operator, with a password and an API key, both shown once.
 */
export async function bootstrap(services: Services, input: { name: string; email: string; capacity?: number | null }): Promise<BootstrapResult> {
  const vs = await services.virtualServers.create(installerPrincipal, { name: input.name, capacity: input.capacity ?? null });
  const password = newPassword();
  const operator = await services.operators.create(installerPrincipal, {
    email: input.email,
    name: "Administrator",
    role: "admin",
    virtualServerId: vs.id,
    scopeIncludesChildren: true,
    password,
  });
  const { apiKey } = await services.operators.createApiKey(installerPrincipal, operator.id, "bootstrap");
  return { virtualServerId: vs.id, virtualServerName: vs.name, operatorId: operator.id, operatorEmail: operator.email, password, apiKey };
}

export function operatorPrincipal(result: BootstrapResult): Principal {
  return {
    kind: "operator",
    operatorId: result.operatorId,
    actor: `operator:${result.operatorEmail}`,
    role: "admin",
    scope: { virtualServerId: result.virtualServerId, path: `/${result.virtualServerId}/`, includesChildren: true },
  };
}
