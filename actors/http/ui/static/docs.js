// The API docs page's "Try it" forms: each sends its call with fetch and shows the answer.
// Plain JavaScript, no library; the rest of the page is rendered on the server.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form.try-form")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const output = form.querySelector("output.answer");
      let path = form.dataset.path;
      const query = new URLSearchParams();
      const headers = {};
      for (const input of form.querySelectorAll("input[data-in]")) {
        if (input.dataset.in === "path") {
          path = path.replace(`{${input.name}}`, encodeURIComponent(input.value));
        } else if (input.dataset.in === "query" && input.value !== "") {
          query.append(input.name, input.value);
        }
      }
      const token = form.querySelector("input[name=token]");
      if (token && token.value) {
        headers.Authorization = `Bearer ${token.value}`;
      }
      const init = { method: form.dataset.method, headers, credentials: "omit" };
      const body = form.querySelector("textarea[name=body]");
      if (body && body.value.trim() !== "") {
        headers["Content-Type"] = body.dataset.type;
        init.body = body.value;
      }
      const url = query.toString() ? `${path}?${query}` : path;
      output.textContent = "…";
      try {
        const response = await fetch(url, init);
        let text = await response.text();
        try {
          text = JSON.stringify(JSON.parse(text), null, 2);
        } catch (error) {
          // not JSON: shown as it is
        }
        output.textContent = `${response.status} ${response.statusText}\n${text}`;
      } catch (error) {
        output.textContent = `the call failed: ${error}`;
      }
    });
  }
});
