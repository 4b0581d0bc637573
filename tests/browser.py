"""A headless chromium, driven as a reader would drive the report (tests/test_workflow.py).

It drives Debian's chromium over the DevTools protocol (--remote-debugging-pipe, no package needed):
the test serves the unpacked report.zip on localhost, clicks through the report's menu (category,
subcategory, the eye button of each result), and reads what the content pane then shows: an image's
pixel size, a table page's rows and columns."""
import http.server
import json
import os
import select
import subprocess
import time
from pathlib import Path


def report_data(html: Path, name: str):
    """A global of the report page: `var <name> = {...};` in its own <script>."""
    text = html.read_text()
    start = text.index(f"var {name} = ", text.index(f'<script id="{name}">')) + len(f"var {name} = ")
    return json.JSONDecoder().raw_decode(text[start:])[0]


class DevTools:
    """A headless chromium driven over --remote-debugging-pipe: JSON messages ending in a NUL byte, the
    browser reading on its fd 3 and writing on its fd 4."""

    def __init__(self, binary: str, profile: Path):
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()

        def pipes():  # in the child: its ends as fds 3 and 4, whatever numbers the pipes got here
            ends = os.dup(to_browser), os.dup(from_browser)  # the second is never 3: the first takes a free 3
            for fd, end in zip((3, 4), ends):
                os.dup2(end, fd)
                os.set_inheritable(fd, True)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"]
        self.process = subprocess.Popen([binary, *flags], preexec_fn=pipes, pass_fds=(3, 4),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id = b"", 0

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._read, 1 << 20) if ready else b""
            if not chunk:
                raise TimeoutError("the browser did not answer" if not ready else "the browser closed its pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60):
        self._next_id += 1
        command = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        os.write(self._write, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._message(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            # anything else is an event, which nothing here waits for

    def evaluate(self, expression: str, session: str, timeout: float = 60):
        answer = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, session=session, timeout=timeout)
        if "exceptionDetails" in answer:
            raise RuntimeError(f"in the page: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def open(self, url: str, timeout: float = 60) -> str:
        """A new tab showing `url`, loaded (its session id)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.navigate", {"url": url}, session=session)
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"location.href === {json.dumps(url)} && document.readyState === 'complete'",
                                session):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load")
            time.sleep(0.1)
        return session

    def close(self):
        self.process.kill()
        self.process.wait()
        os.close(self._write)
        os.close(self._read)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


# Runs in the report page: clicks through every category and subcategory and each result's eye button,
# and returns what the content pane showed for each (keyed by the image's or the frame's source).
CLICK_THROUGH = r"""
(async () => {
  const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
  async function until(condition, ms = 20000) {
    const end = Date.now() + ms;
    for (;;) {
      const value = condition();
      if (value) return value;
      if (Date.now() > end) return null;
      await sleep(50);
    }
  }
  const sidebar = () => document.querySelector("nav");
  const pane = () => document.querySelector("div.grow.justify-center");
  const link = text => [...sidebar().querySelectorAll("div.p-3 li a")].find(a => a.textContent.trim() === text);
  const click = element => element.dispatchEvent(new MouseEvent("click", {bubbles: true, cancelable: true}));
  const shown = {}, problems = [];
  let last = null;
  for (const category of Object.keys(categories).sort()) {
    for (const subcategory of Object.keys(categories[category]).sort()) {
      click(sidebar().querySelector("nav ol li a"));  // the breadcrumbs' home
      const entry = await until(() => link(isSingleCategory() ? "Results" : category));
      if (!entry) { problems.push(`no menu entry for ${category}`); continue; }
      click(entry);
      if (!isSingleSubcategory(category)) {
        const sub = await until(() => link(subcategory));
        if (!sub) { problems.push(`no entry for ${category} / ${subcategory}`); continue; }
        click(sub);
      }
      const count = (await until(() => sidebar().querySelectorAll("table tbody tr").length)) || 0;
      for (let i = 0; i < count; i++) {
        const row = sidebar().querySelectorAll("table tbody tr")[i];
        const label = row.querySelector("td").textContent;
        click(row.querySelector("td:last-child a"));  // the eye button
        const element = await until(() => {
          const e = pane().querySelector("img, iframe");
          return e && e.getAttribute("src") !== last ? e : null;
        });
        if (!element) { problems.push(`${category} / ${subcategory} / ${label}: nothing shown`); continue; }
        last = element.getAttribute("src");
        const record = {category, subcategory, label, tag: element.tagName.toLowerCase()};
        if (record.tag === "img") {
          await until(() => element.complete);
          Object.assign(record, {width: element.naturalWidth, height: element.naturalHeight});
        } else {
          const page = await until(() => {
            const d = element.contentDocument;
            return d && d.readyState === "complete" && d.location.href !== "about:blank" ? d : null;
          });
          Object.assign(record, page ? {
            title: page.title,
            columns: page.querySelectorAll("thead th").length,
            rows: page.querySelectorAll("tbody tr").length,
            cells: page.querySelectorAll("tbody td").length,
            height: element.clientHeight,
          } : {rows: null});
        }
        shown[last] = record;
      }
    }
  }
  return JSON.stringify({shown, problems});
})()
"""
