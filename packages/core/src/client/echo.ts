/**
 * Whether the body an answer returned is the message body sent, byte for byte: the one kind of
 * answer with a body after which a connection is kept (transaction.ts, #settle).
 *
 * A server that miscounts its chunks (decimal sizes, an echo unframed or framed twice) lets the
 * upload's own bytes end the echo early: the rest of it, holding a head the upload wrote (a clean
 * 204), comes in a later read, and on a kept connection it would be read as the next exchange's
 * answer, that exchange's own verdict lost (campaign-at AT5). A count of bytes does not tell such
 * an echo from a whole one: the server's own framing, taken for data, can make up the difference
 * (campaign-au AU1). An echo read with the framing wrong is the sent bytes with framing taken in
 * and upload bytes taken out, so it is not the sent bytes unless the upload repeats the server's
 * framing where it would be taken in, and holds no bytes that were taken out. An adapted body (a
 * sanitiser's) costs a new connection.
 *
 * The sent chunks are held by reference (the body's own buffers; no copy) until the answer's
 * bytes are compared with them, at most `max` bytes ahead of the answer (HELD_MAX, or the
 * caller's smaller bound: a body spooled to disk is read in fresh buffers, which the check would
 * otherwise keep in memory; campaign-ax AX4): past that, or when the bytes differ, nothing more
 * is held and the connection is not kept.
 */

/** The most bytes sent and not yet compared with the answer that are held. */
const HELD_MAX = 2 * 1024 * 1024;

export class EchoCheck {
  readonly #max: number;
  #held: Buffer[] = [];
  /** The held chunk compared next, and the offset in it. */
  #next = 0;
  #at = 0;
  #heldBytes = 0;
  #sent = 0;
  #read = 0;
  #same = true;

  constructor(max = HELD_MAX) {
    // (Not a number, or below 0: nothing is held.)
    this.#max = max >= 0 ? Math.min(HELD_MAX, max) : 0;
  }

  /** A chunk of the message body was sent. */
  sent(chunk: Buffer): void {
    this.#sent += chunk.length;
    if (!this.#same) return;
    if (this.#heldBytes + chunk.length > this.#max) this.#differs();
    else {
      this.#held.push(chunk);
      this.#heldBytes += chunk.length;
    }
  }

  /** Bytes of the answer's body were read. */
  read(data: Buffer): void {
    this.#read += data.length;
    let off = 0;
    while (this.#same && off < data.length) {
      const chunk = this.#held[this.#next];
      const n = chunk === undefined ? 0 : Math.min(chunk.length - this.#at, data.length - off);
      // More than was sent, or other bytes.
      if (
        chunk === undefined ||
        !chunk.subarray(this.#at, this.#at + n).equals(data.subarray(off, off + n))
      ) {
        this.#differs();
        return;
      }
      off += n;
      this.#at += n;
      this.#heldBytes -= n;
      if (this.#at === chunk.length) {
        // Compared: no longer held (the slot, not the array: one array per exchange).
        this.#held[this.#next++] = EMPTY;
        this.#at = 0;
      }
    }
  }

  /** The answer's body so far is every byte sent, and nothing else. */
  get echoed(): boolean {
    return this.#same && this.#read === this.#sent;
  }

  /** Lets go of the chunks held (the exchange is over). */
  clear(): void {
    this.#held = [];
    this.#next = 0;
    this.#heldBytes = 0;
  }

  #differs(): void {
    this.#same = false;
    this.clear();
  }
}

const EMPTY = Buffer.alloc(0);
