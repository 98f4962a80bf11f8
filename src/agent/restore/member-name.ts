import type { TarMember } from '../../archive/tar-reader.js';

/**
 * Member names as the extractor sees them, as pure functions over bytes: the real name of a GNU
 * sparse member, the components of a name, and why a name may not be written under the target.
 */

const SLASH = 0x2f;

/** Why a name may not be written under the target folder, or null. */
export function unsafeName(name: Buffer): string | null {
  if (name.length === 0) return 'has an empty name';
  if (name.includes(0)) return 'has a NUL byte in its name';
  if (name[0] === SLASH) return 'has an absolute name';
  for (const part of splitName(name)) if (part.length === 2 && part[0] === 0x2e && part[1] === 0x2e) return 'has a ".." component';
  return null;
}

/** Components, without empty ones and `.`. */
export function splitName(name: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= name.length; i++) {
    if (i === name.length || name[i] === SLASH) {
      const part = name.subarray(start, i);
      if (part.length > 0 && !(part.length === 1 && part[0] === 0x2e)) out.push(part);
      start = i + 1;
    }
  }
  return out;
}

/** A member's real name: a GNU sparse 1.0 member carries it (and its size) in PAX records. */
export function realName(m: TarMember): { name: Buffer; sparse: { realSize: number } | null } {
  const major = m.pax.get('GNU.sparse.major')?.toString();
  const sparseName = m.pax.get('GNU.sparse.name');
  if (m.type === 'file' && major === '1' && sparseName) {
    const realSize = Number(m.pax.get('GNU.sparse.realsize')?.toString() ?? 'NaN');
    if (Number.isSafeInteger(realSize) && realSize >= 0) return { name: sparseName, sparse: { realSize } };
  }
  return { name: m.name, sparse: null };
}
