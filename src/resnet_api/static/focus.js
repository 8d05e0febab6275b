// Redraws that replace nodes would drop keyboard focus with the node that had it (a Retry button, a row's Use
// button): keepFocus remembers it by its data-focus key inside its data-focus-scope (a card, a table row), redraws,
// then focuses the same control again; if that control is gone, its scope, else the container, keeps the place.

const find = (root, attr, value) => root.querySelector(`[${attr}="${CSS.escape(value)}"]`);

export function keepFocus(container, redraw) {
  const active = document.activeElement;
  const inside = active !== null && active !== container && container.contains(active);
  const key = inside ? active.closest("[data-focus]")?.dataset.focus : undefined;
  const scope = inside ? active.closest("[data-focus-scope]")?.dataset.focusScope : undefined;
  redraw();
  if (!inside || active.isConnected) return; // updated in place: focus never moved
  const scopeEl = scope === undefined ? container : find(container, "data-focus-scope", scope);
  const target = scopeEl && key !== undefined ? find(scopeEl, "data-focus", key) : null;
  const fallback = scopeEl || container;
  if (target && !target.disabled) target.focus({ preventScroll: true });
  else {
    // Not a control, but focusable from script, so the next Tab goes on from here rather than from the top.
    if (!fallback.hasAttribute("tabindex")) fallback.tabIndex = -1;
    fallback.focus({ preventScroll: true });
  }
}
