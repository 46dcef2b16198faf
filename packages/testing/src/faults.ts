/**
 * Scripted misbehaviour: a test's `script(request)` returns one of these for a request (decided
 * when its ICAP head arrives), and the server misbehaves that way for that request only.
 */
/**
 * `mid-body`: while the body beyond the preview arrives (at once when there is no preview).
 * `after-body`: once the whole request is in, before any answer (a scanner process that
 * crashes on the file).
 */
export type FaultMoment = 'on-head' | 'after-preview' | 'mid-body' | 'after-body' | 'mid-response';

export type Fault =
  /** Answer normally, after `ms`. */
  | { kind: 'delay'; ms: number }
  /** Never answer (keep reading, until the client gives up or the server closes). */
  | { kind: 'hang' }
  /** Close the connection (FIN) at that moment. */
  | { kind: 'close'; when: FaultMoment }
  /** Reset the connection (RST) at that moment. */
  | { kind: 'reset'; when: FaultMoment }
  /**
   * The whole server goes down once the request is in (after a `100 Continue` when previewed):
   * a scanner daemon that crashes on the file. It stops listening (new connections are
   * refused) and resets every connection; `restart()` brings it back on the same port. With
   * `keepListening`, only every connection is reset: a scanning process that crashed with the
   * connections it served, its parent still listening (c-icap's children).
   */
  | { kind: 'crash'; keepListening?: boolean }
  /**
   * Answer with this ICAP status (e.g. 500, 503, 404, 400) and `Encapsulated: null-body=0`, or
   * the `encapsulated` given (say `opt-body=0`, as some servers send with a 500, no body following).
   */
  | { kind: 'status'; status: number; reason?: string; encapsulated?: string }
  /**
   * A server with time limits of its own on receiving a request (many scanners have them):
   * closes the connection (FIN) once no byte of the request came for `idleMs`, or `totalMs`
   * after its head, whichever comes first, if the request is not complete by then.
   */
  | { kind: 'give-up'; idleMs?: number; totalMs?: number }
  /** Answer with bytes that are not ICAP, then close. */
  | { kind: 'garbage'; bytes?: string | Buffer }
  /**
   * A server that decides from the preview (a file type it does not scan): `204` as soon as a
   * preview ends without ieof, the rest of the body never asked for. A body sent without a
   * preview is answered normally.
   */
  | { kind: 'preview-204' }
  /** Send `100 Continue` even though the preview ended with ieof. */
  | { kind: 'continue-after-ieof' }
  /** Answer with a header section of about this many bytes. */
  | { kind: 'oversized-headers'; bytes: number }
  /**
   * Answer 200 with a chunk that never ends (written with backpressure until the client closes):
   * the body of an HTTP response (default), or of a modified request (`in: 'request'`).
   */
  | { kind: 'endless-chunk'; in?: 'response' | 'request' }
  /** Send 100 Continue after the preview, then never read or answer. */
  | { kind: 'stall-after-continue' }
  /** Answer with a block page right after the ICAP head, before reading the body (then discard it). */
  | { kind: 'early-response' }
  /** Answer normally with `Connection: close`, then close. */
  | { kind: 'connection-close' }
  /** Answer normally without an ISTag header. */
  | { kind: 'no-istag' }
  /**
   * Answer normally, but trickle every byte of the answer (100 Continue included): `bytes`
   * (default 1) every `intervalMs`. The connection never idles long, yet nothing completes.
   */
  | { kind: 'trickle'; intervalMs: number; bytes?: number }
  /** Send exactly these bytes as the response (after the request was read). */
  | { kind: 'raw'; response: Buffer | string }
  /**
   * A scanner that refuses a file from its first bytes (RFC 3507 §4.5 allows an answer before
   * the body is complete): a complete block answer (in the server's vendor style) while the
   * client is still sending. With `continue` (default true) the preview is answered with
   * `100 Continue` first and the block goes out once `after` (default 1) more body bytes came
   * (0: right after the 100); with `continue: false` it goes out as soon as the ICAP head is
   * read. Then, by `ending`:
   * - `close`: FIN right after the answer, the rest never read (the socket is destroyed once
   *   the FIN is out, so what the client sends next is answered with an RST);
   * - `reset`: RST right after the answer;
   * - `keep-alive`: the rest of the body is read and dropped; the connection stays usable.
   * `onClosed` is called once the server's socket is closed (close, reset): a test can hold
   * the rest of its upload until then, to make the client write into the closed connection.
   */
  | {
      kind: 'early-verdict';
      ending: 'close' | 'reset' | 'keep-alive';
      continue?: boolean;
      after?: number;
      /** Send the answer without its last 20 bytes (the head complete, the block page cut off). */
      truncate?: boolean;
      /**
       * Called right before the answer is written (synchronously): a test can make more of its
       * upload arrive in the same instant as the answer and the close.
       */
      beforeAnswer?: () => void;
      onClosed?: () => void;
    };

export type FaultKind = Fault['kind'];
