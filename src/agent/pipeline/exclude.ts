import picomatch from 'picomatch';

/**
 * Exclude globs as the contract defines them: a pattern matches the path relative to its source
 * or the basename. A matching directory is pruned, so `.git/**` drops a .git directory at any
 * depth together with everything it holds, and `*.log` drops log files anywhere.
 */
export class ExcludeMatcher {
  private readonly matchers: picomatch.Matcher[];

  constructor(readonly patterns: readonly string[]) {
    this.matchers = patterns.map((p) => picomatch(p, { dot: true }));
  }

  /** `relPath` is relative to the source root, '/'-separated, without a leading '/'. */
  excludes(relPath: string): boolean {
    if (this.matchers.length === 0 || relPath === '') return false;
    const slash = relPath.lastIndexOf('/');
    const base = slash === -1 ? relPath : relPath.slice(slash + 1);
    for (const m of this.matchers) {
      if (m(relPath) || (slash !== -1 && m(base))) return true;
    }
    return false;
  }
}
