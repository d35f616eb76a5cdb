// A windowed list: only the rows in view (plus a few) exist in the DOM; rows are reused,
// and a row is rewritten only when its item changed (its version) or it moved.

export class VirtualList {
  /**
   * @param {HTMLElement} scroller the element that scrolls (position: relative)
   * @param {{create: () => HTMLElement, update: (el: HTMLElement, item: any) => void,
   *          key: (item: any) => any, version: (item: any) => number}} rows
   */
  constructor(scroller, rows) {
    this.scroller = scroller;
    this.rows = rows;
    this.items = [];
    this.rowHeight = 56;
    this.overscan = 6;
    this.generation = 0;
    this.visible = new Map(); // key -> row element
    this.free = [];
    this.frame = 0;
    this.spacer = document.createElement("div");
    this.spacer.className = "vlist-spacer";
    scroller.appendChild(this.spacer);
    scroller.addEventListener("scroll", () => this.schedule(), { passive: true });
    new ResizeObserver(() => {
      this.measure();
      this.schedule();
    }).observe(scroller);
    this.measure();
  }

  measure() {
    const value = parseFloat(getComputedStyle(this.scroller).getPropertyValue("--row-h"));
    if (value > 0 && value !== this.rowHeight) {
      this.rowHeight = value;
      this.generation += 1;
    }
  }

  setItems(items) {
    this.items = items;
    this.schedule();
  }

  /** Rewrite every visible row (e.g. the language changed). */
  refresh() {
    this.generation += 1;
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  scrollToIndex(index) {
    const top = index * this.rowHeight;
    const view = this.scroller.clientHeight;
    if (top < this.scroller.scrollTop || top + this.rowHeight > this.scroller.scrollTop + view) {
      this.scroller.scrollTop = Math.max(0, top - view / 3);
    }
  }

  render() {
    this.frame = 0;
    const h = this.rowHeight;
    const count = this.items.length;
    this.spacer.style.height = `${count * h}px`;
    const top = this.scroller.scrollTop;
    const start = Math.max(0, Math.floor(top / h) - this.overscan);
    const end = Math.min(count, Math.ceil((top + this.scroller.clientHeight) / h) + this.overscan);
    const next = new Map();
    for (let i = start; i < end; i++) {
      const item = this.items[i];
      const key = this.rows.key(item);
      let el = this.visible.get(key);
      if (el) this.visible.delete(key);
      else el = this.free.pop() || this.scroller.appendChild(this.rows.create());
      const version = this.rows.version(item);
      if (el._key !== key || el._version !== version || el._generation !== this.generation) {
        el._key = key;
        el._version = version;
        el._generation = this.generation;
        el._item = item;
        this.rows.update(el, item);
      }
      if (el._index !== i) {
        el._index = i;
        el.style.transform = `translateY(${i * h}px)`;
      }
      if (el.hidden) el.hidden = false;
      next.set(key, el);
    }
    for (const el of this.visible.values()) {
      el.hidden = true;
      el._key = undefined;
      el._index = -1;
      this.free.push(el);
    }
    this.visible = next;
  }

  /** The row elements now in the DOM and shown. */
  shownRows() {
    return this.visible.values();
  }
}
