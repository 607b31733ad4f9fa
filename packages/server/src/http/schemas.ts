import { z } from "zod";

/** Shapes shared by several modules' routes. */
export const errorResponse = z
  .object({
    error: z.object({ code: z.string(), message: z.string(), details: z.unknown().optional() }),
  })
  .meta({ id: "Error" });

/** The usual refusals of an authenticated route, for the OpenAPI document. */
export const commonErrors = {
  400: errorResponse,
  401: errorResponse,
  403: errorResponse,
  404: errorResponse,
  409: errorResponse,
};

export const pageLimit = z.coerce.number().int().min(1).max(1000).default(100);

export const reasonBody = z.strictObject({ reason: z.string().trim().min(1).max(500).optional() });

export const virtualServerIdParam = z.strictObject({ virtualServerId: z.string().min(1).max(64) });
