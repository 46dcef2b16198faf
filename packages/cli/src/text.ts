/**
 * Text that reaches a terminal or a log in the text output (file names, server-sent values):
 * no control character passes through. C0 controls, DEL, C1 controls, the Unicode line and
 * paragraph separators and the bidirectional overrides are written as backslash escapes
 * (`\n`, `\r`, `\t`, `\xNN`, `\uNNNN`), and a backslash itself as `\\`, so the rendering is
 * one line and unambiguous. `--json` does not use it: JSON escapes on its own.
 */
const UNSAFE = /[\\\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

export function renderText(value: string): string {
  return value.replace(UNSAFE, (c) => {
    switch (c) {
      case '\\':
        return '\\\\';
      case '\n':
        return '\\n';
      case '\r':
        return '\\r';
      case '\t':
        return '\\t';
    }
    const code = c.charCodeAt(0);
    return code <= 0xff
      ? `\\x${code.toString(16).padStart(2, '0')}`
      : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}
