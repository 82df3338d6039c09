// Shared by the profile summaries (profile.mjs, alloc-profile.mjs).

/** A profile frame's URL, short: dist/…, node_modules/…, or node's own module name. */
export function shortUrl(url) {
  if (!url) return '';
  const i = url.indexOf('/dist/');
  if (i >= 0) return url.slice(i + 1);
  const m = url.indexOf('node_modules/');
  if (m >= 0) return url.slice(m);
  return url.replace(/^node:/, '');
}
