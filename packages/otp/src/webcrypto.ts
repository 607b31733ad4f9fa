// The WebCrypto types, taken from the global `crypto` rather than imported: @types/node
// declares them only inside "node:crypto", which this package must not import, and in a
// browser build the same expressions give the DOM's own types.
export type WebCryptoKey = Awaited<ReturnType<typeof globalThis.crypto.subtle.importKey>>;

export interface WebCryptoKeyPair {
  publicKey: WebCryptoKey;
  privateKey: WebCryptoKey;
}

/** The standard WebCrypto API, present in Node 20 and every current browser. */
export function subtle(): typeof globalThis.crypto.subtle {
  return globalThis.crypto.subtle;
}

export function utf8(text: string): Uint8Array<ArrayBuffer> {
  // Copied into a fresh ArrayBuffer: some runtimes' TextEncoder types allow shared buffers.
  return new Uint8Array(new TextEncoder().encode(text));
}

export async function sha256(data: Uint8Array | string): Promise<Uint8Array<ArrayBuffer>> {
  const bytes = typeof data === "string" ? utf8(data) : new Uint8Array(data);
  return new Uint8Array(await subtle().digest("SHA-256", bytes));
}
