import type { PropertyKind, SubjectStorage } from '../storage.js'

/** How `describeStorage` makes the storages it tests. */
export interface StorageFactory {
  /**
   * A new storage. Storages created with the same `namespace` share data (and should share one
   * client or pool when `shared` is true, to prove atomicity across writers on one connection);
   * different namespaces must be isolated (a Redis prefix, a PostgreSQL table). Each test uses a
   * fresh namespace.
   */
  create(namespace: string): SubjectStorage | Promise<SubjectStorage>
  /**
   * A storage of `namespace` on a connection of its own (a new client or pool), as another
   * process would have: then writers race on the server, not in one client's queue. Omit for a
   * storage that lives in one process (the tests that need it are skipped).
   */
  createIndependent?(namespace: string): SubjectStorage | Promise<SubjectStorage>
  /** A storage whose server is down (e.g. a closed port). Omit when there is no server. */
  createUnreachable?(): SubjectStorage | Promise<SubjectStorage>
  /**
   * Writes one property's stored text directly, as another tool would (a KRules service), on a
   * connection of its own. Omit when there is no such writer (the tests that need it are skipped).
   */
  writeRaw?(
    namespace: string,
    subject: string,
    kind: PropertyKind,
    name: string,
    text: string,
  ): Promise<void>
  /**
   * A storage of `namespace` on a connection of its own, made with `options`, with ways to reach
   * that connection directly (see {@link OwnConnection}). Omit when there is no connection.
   */
  createOnConnection?(
    namespace: string,
    options: { readonly maxAttempts?: number },
  ): Promise<OwnConnection>
  /**
   * A storage (with `timeout` ms) whose client connects to 127.0.0.1:`port`, a server that
   * accepts connections and never answers. Omit when there is no server.
   */
  createSilent?(
    port: number,
    timeout: number,
  ): Promise<{ storage: SubjectStorage; end(): Promise<void> }>
  /**
   * Makes `subject` of `namespace` impossible to write, as a foreign writer could (a Redis key of
   * another type, a row whose columns are not JSON objects): a unit writing it must fail whole.
   */
  corrupt?(namespace: string, subject: string): Promise<void>
  /** Called once after the suite: close clients the factory created. */
  cleanup?(): Promise<void>
}

/** A storage and the connection it was handed (see {@link StorageFactory.createOnConnection}). */
export interface OwnConnection {
  readonly storage: SubjectStorage
  /**
   * Sends a write of a property's stored text on the storage's own connection, without waiting:
   * it reaches the server before anything the storage sends after it.
   */
  interfere(subject: string, kind: PropertyKind, name: string, text: string): void
  /** Reads a property's stored text through the connection (proves it is still open). */
  read(subject: string, kind: PropertyKind, name: string): Promise<string | undefined>
  /** Ends the connection. */
  end(): Promise<void>
}
