/**
 * Gateway API RegularExpression matches are "RE2-ish" and agents compile them with JS
 * `RegExp`. A pattern is accepted only when it compiles and uses nothing RE2 lacks:
 * lookaround and backreferences are refused. That keeps a route portable to RE2-based
 * meshes and keeps the constructs that backtrack worst out of the request path.
 */

/** Why `pattern` is refused, or undefined when it is fine. */
export function regexProblem(pattern: string): string | undefined {
  try {
    new RegExp(pattern);
  } catch (err) {
    return `not a valid regular expression: ${(err as Error).message}`;
  }
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '\\') {
      const next = pattern[i + 1] ?? '';
      if (!inClass && (/[1-9]/.test(next) || (next === 'k' && pattern[i + 2] === '<'))) {
        return `backreference ${JSON.stringify(`\\${next}`)} is not supported (RE2 has no backreferences)`;
      }
      i++;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      continue;
    }
    if (c === '[') inClass = true;
    else if (c === '(' && pattern[i + 1] === '?') {
      const look = pattern.slice(i + 2, i + 4);
      if (look.startsWith('=') || look.startsWith('!') || look === '<=' || look === '<!') {
        return `lookaround "(?${look.startsWith('<') ? look : look[0]}" is not supported (RE2 has no lookahead/lookbehind)`;
      }
    }
  }
  return undefined;
}
