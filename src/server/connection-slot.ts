import type tls from 'node:tls';

/**
 * The one connection that currently feeds a session (its data connection, or the primary of a
 * parallel session) or one data stream of a parallel session. A newcomer (a resume, a re-join)
 * evicts the old connection, which may still look alive on a half-open link, and waits until the
 * old connection's handler has let go before taking over.
 */
export class ConnectionSlot {
  private current: tls.TLSSocket | null = null;
  private released: Promise<void> = Promise.resolve();

  /** The connection in the slot, or null while detached. */
  get socket(): tls.TLSSocket | null {
    return this.current;
  }

  /** A connection is in the slot and not destroyed. */
  get busy(): boolean {
    return this.current !== null && !this.current.destroyed;
  }

  /** Destroys the connection in the slot, if any, and waits until its handler has let go. */
  async evict(): Promise<void> {
    this.current?.destroy();
    await this.released;
  }

  /** Runs `serve` with `socket` in the slot; the slot is empty again once it settles. */
  async occupy<T>(socket: tls.TLSSocket, serve: () => Promise<T>): Promise<T> {
    let release!: () => void;
    this.released = new Promise<void>((resolve) => (release = resolve));
    this.current = socket;
    try {
      return await serve();
    } finally {
      this.vacate(socket);
      release();
    }
  }

  /**
   * Takes `socket` out of the slot without destroying it, so that an answer still queued on it can
   * drain while the session is wound up.
   */
  vacate(socket: tls.TLSSocket): void {
    if (this.current === socket) this.current = null;
  }

  /** Destroys whatever connection is in the slot. */
  destroy(): void {
    this.current?.destroy();
  }
}
