// Differences between two app versions: canonical JSON (sorted keys, two-space indent)
// compared line by line (longest common subsequence). Pure, tested under node.

/** JSON text with object keys sorted at every level, so equal values print equally. */
export function canonicalJson(value) {
  const sort = (v) => {
    if (Array.isArray(v)) return v.map(sort);
    if (v && typeof v === 'object') {
      return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sort(v[k])]));
    }
    return v;
  };
  return JSON.stringify(sort(value), null, 2);
}

/**
 * Line diff of two texts: [{op, text}] with op ' ' (both), '-' (only in `before`) or
 * '+' (only in `after`), in order.
 */
export function diffLines(before, after) {
  const a = before.split('\n');
  const b = after.split('\n');
  // Common prefix and suffix first: versions usually differ in a few lines.
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start += 1;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) {
    endA -= 1;
    endB -= 1;
  }
  const midA = a.slice(start, endA);
  const midB = b.slice(start, endB);
  const n = midA.length;
  const m = midB.length;
  // lcs[i][j]: length of the longest common subsequence of midA[i..] and midB[j..].
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i -= 1) {
    for (let j = m - 1; j >= 0; j -= 1) {
      lcs[i][j] = midA[i] === midB[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = a.slice(0, start).map((text) => ({ op: ' ', text }));
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && midA[i] === midB[j]) {
      out.push({ op: ' ', text: midA[i] });
      i += 1;
      j += 1;
    } else if (j < m && (i === n || lcs[i][j + 1] > lcs[i + 1][j])) {
      out.push({ op: '+', text: midB[j] });
      j += 1;
    } else {
      out.push({ op: '-', text: midA[i] });
      i += 1;
    }
  }
  for (const text of a.slice(endA)) out.push({ op: ' ', text });
  return out;
}

/** Top-level keys whose values differ between two definitions, sorted. */
export function changedKeys(before, after) {
  const keys = new Set([...Object.keys(before ?? {}), ...Object.keys(after ?? {})]);
  return [...keys].filter((k) => canonicalJson(before?.[k] ?? null) !== canonicalJson(after?.[k] ?? null)).sort();
}

/**
 * Only the changed lines and `context` lines around them; skipped runs become
 * {op: '…', text: 'N unchanged lines'}.
 */
export function withContext(lines, context = 3) {
  const keep = new Array(lines.length).fill(false);
  lines.forEach((line, index) => {
    if (line.op === ' ') return;
    for (let k = Math.max(0, index - context); k <= Math.min(lines.length - 1, index + context); k += 1) keep[k] = true;
  });
  const out = [];
  let skipped = 0;
  lines.forEach((line, index) => {
    if (keep[index]) {
      if (skipped) out.push({ op: '…', text: `${skipped} unchanged line${skipped === 1 ? '' : 's'}` });
      skipped = 0;
      out.push(line);
    } else {
      skipped += 1;
    }
  });
  if (skipped) out.push({ op: '…', text: `${skipped} unchanged line${skipped === 1 ? '' : 's'}` });
  return out;
}
