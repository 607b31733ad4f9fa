// A few lines over IndexedDB's request API, written by hand: the app needs get, put and
// put-if-absent on two object stores, not a library.

const DATABASE = "tessera";
const VERSION = 1;

/** `state`: the authenticator's state (no keys in it); `keys`: non-extractable CryptoKeys. */
export type ObjectStoreName = "state" | "keys";

let opening: Promise<IDBDatabase> | null = null;

function database(): Promise<IDBDatabase> {
  opening ??= new Promise<IDBDatabase>((resolve, reject) => {
    const request = indexedDB.open(DATABASE, VERSION);
    request.onupgradeneeded = () => {
      for (const name of ["state", "keys"] satisfies ObjectStoreName[]) {
        if (!request.result.objectStoreNames.contains(name)) request.result.createObjectStore(name);
      }
    };
    request.onsuccess = () => {
      const opened = request.result;
      // A newer version of the app (in a tab or its service worker) wants to upgrade the
      // storage: let it, and open again when next needed, instead of blocking it.
      opened.onversionchange = () => {
        opened.close();
        opening = null;
      };
      resolve(opened);
    };
    request.onerror = () => reject(request.error ?? new Error("this browser's storage (IndexedDB) did not open"));
    request.onblocked = () => reject(new Error("another Tessera tab is updating the storage; close it and try again"));
  }).catch((error: unknown) => {
    opening = null;
    throw error;
  });
  return opening;
}

function done(transaction: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    transaction.oncomplete = () => resolve();
    transaction.onerror = () => reject(transaction.error ?? new Error("storage write failed"));
    transaction.onabort = () => reject(transaction.error ?? new Error("storage write aborted"));
  });
}

export async function idbGet<T>(store: ObjectStoreName, key: string): Promise<T | undefined> {
  const transaction = (await database()).transaction(store, "readonly");
  const request = transaction.objectStore(store).get(key);
  await done(transaction);
  return request.result as T | undefined;
}

export async function idbPut(store: ObjectStoreName, key: string, value: unknown): Promise<void> {
  const transaction = (await database()).transaction(store, "readwrite");
  transaction.objectStore(store).put(value, key);
  await done(transaction);
}

/**
 * Stores `value` unless the key holds one already, in one transaction, and returns what
 * is stored: of two tabs making a key at once, both end up using the same one.
 */
export async function idbPutIfAbsent<T>(store: ObjectStoreName, key: string, value: T): Promise<T> {
  const transaction = (await database()).transaction(store, "readwrite");
  const objects = transaction.objectStore(store);
  let kept: T = value;
  const read = objects.get(key);
  read.onsuccess = () => {
    if (read.result === undefined) objects.put(value, key);
    else kept = read.result as T;
  };
  await done(transaction);
  return kept;
}
