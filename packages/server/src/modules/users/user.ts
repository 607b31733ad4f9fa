import { z } from "zod";
import { newId } from "../../ids.js";
import type { UserRow } from "../../storage/schema.js";

// Login names as RADIUS and most directories accept them: no spaces or control
// characters, at most 128 characters.
export const userIdSchema = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[^\s\p{Cc}]+$/u, "a user id has no spaces or control characters");

export const groupNameSchema = z.string().trim().min(1).max(128);

export const userInputSchema = z.strictObject({
  userId: userIdSchema,
  firstName: z.string().trim().max(128).default(""),
  lastName: z.string().trim().max(128).default(""),
  email: z.union([z.email().max(254), z.literal("")]).default(""),
  groups: z.array(groupNameSchema).max(256).default([]),
});

export type UserInput = z.infer<typeof userInputSchema>;

export const userUpdateSchema = z.strictObject({
  firstName: z.string().trim().max(128).optional(),
  lastName: z.string().trim().max(128).optional(),
  email: z.union([z.email().max(254), z.literal("")]).optional(),
  groups: z.array(groupNameSchema).max(256).optional(),
});

export type UserUpdate = z.infer<typeof userUpdateSchema>;

export interface User {
  userId: string;
  virtualServerId: string;
  firstName: string;
  lastName: string;
  email: string;
  groups: string[];
  tokens: Array<{ serial: string; type: string; state: string }>;
  createdAt: string;
  updatedAt: string;
}

export function toUser(row: UserRow, groups: string[], tokens: User["tokens"]): User {
  return {
    userId: row.user_id,
    virtualServerId: row.virtual_server_id,
    firstName: row.first_name,
    lastName: row.last_name,
    email: row.email,
    groups,
    tokens,
    createdAt: new Date(row.created_at).toISOString(),
    updatedAt: new Date(row.updated_at).toISOString(),
  };
}

/**
 * Text as searches compare it: Unicode-normalised (NFKC) and lower-cased, the same in
 * JavaScript for every database (SQLite's lower() folds ASCII only). Greek final sigma
 * is folded to sigma, since a prefix typed in capitals ends in one ("ΟΔΥΣ" must find
 * "Οδυσσέας"), and control characters are dropped, so that none stands in the key for
 * the separator between fields.
 */
export function foldForSearch(text: string): string {
  return text.normalize("NFKC").toLowerCase().replaceAll("ς", "σ").replace(/\p{Cc}/gu, "");
}

/** Starts each field in a user's search key; no folded field holds it. */
export const SEARCH_FIELD_START = "\u001f";

/** The user's `search_key`: the fields a search matches the start of, folded. */
export function userSearchKey(fields: Pick<UserRow, "user_id" | "first_name" | "last_name" | "email">): string {
  return [fields.user_id, fields.first_name, fields.last_name, fields.email].map((field) => SEARCH_FIELD_START + foldForSearch(field)).join("");
}

/** The row of a new user, with a fresh internal id. */
export function newUserRow(virtualServerId: string, input: UserInput, nowMs: number): UserRow {
  const fields = { user_id: input.userId, first_name: input.firstName, last_name: input.lastName, email: input.email };
  return {
    id: newId("usr"),
    virtual_server_id: virtualServerId,
    ...fields,
    search_key: userSearchKey(fields),
    created_at: nowMs,
    updated_at: nowMs,
  };
}
