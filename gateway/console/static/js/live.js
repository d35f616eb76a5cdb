// Server-Sent Events from /api/events: each `alert` event is one AlertSummary to apply.
// The browser reconnects by itself (sending Last-Event-ID); after a gap we also re-read the list.

export const liveStats = { events: 0, lastEventAt: null, connected: false, reconnects: 0 };

export class LiveFeed {
  constructor({ onAlert, onStatus, onResync, onClosed, onLogout }) {
    Object.assign(this, { onAlert, onStatus, onResync, onClosed, onLogout });
    this.source = null;
    this.hadError = false;
    this.retry = 0;
  }

  start() {
    this.stop();
    const source = new EventSource("/api/events", { withCredentials: true });
    this.source = source;
    source.addEventListener("alert", (e) => {
      liveStats.events += 1;
      liveStats.lastEventAt = performance.now();
      let summary;
      try {
        summary = JSON.parse(e.data);
      } catch {
        return;
      }
      this.onAlert(summary);
    });
    source.addEventListener("logout", () => {
      // the session expired or was ended: the server closes the stream; do not reconnect
      this.stop();
      this.onLogout();
    });
    source.addEventListener("open", () => {
      liveStats.connected = true;
      this.onStatus(true);
      if (this.hadError) {
        this.hadError = false;
        liveStats.reconnects += 1;
        this.onResync();
      }
    });
    source.addEventListener("error", () => {
      liveStats.connected = false;
      this.hadError = true;
      this.onStatus(false);
      if (source.readyState === EventSource.CLOSED && this.source === source) {
        // closed for good (e.g. the session expired): ask the page, then try again
        clearTimeout(this.retry);
        this.retry = setTimeout(() => this.onClosed(), 3000);
      }
    });
  }

  stop() {
    clearTimeout(this.retry);
    if (this.source) this.source.close();
    this.source = null;
  }
}
