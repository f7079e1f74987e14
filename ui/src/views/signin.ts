import { h } from "../dom";
import { errorBox, showError, type View } from "../view";

/** Sign in with an API key. The input has no name, so even a native submit cannot put the key
 *  in a URL; the caller keeps it in sessionStorage only. */
export function signInView(onKey: (key: string) => Promise<string | null>, message?: string): View {
  const input = h("input", {
    id: "api-key", type: "password", autocomplete: "off", spellcheck: "false", required: true,
    "aria-describedby": "api-key-help signin-error", maxlength: 200,
  });
  const err = errorBox();
  err.id = "signin-error";
  const button = h("button", { type: "submit", class: "btn" }, "Sign in");
  const form = h("form", { class: "signin", method: "post", action: "/", novalidate: true,
    "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title", class: "page-title", tabindex: "-1" }, "Sign in to Airlock"),
    h("label", { for: "api-key" }, "API key"),
    input,
    h("p", { id: "api-key-help", class: "hint" },
      "Paste the key an administrator gave you. It is kept in this browser tab only and " +
      "forgotten when the tab closes."),
    err,
    button);
  if (message) showError(err, message);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const key = input.value.trim();
    if (!key) {
      showError(err, "Enter your API key.");
      input.focus();
      return;
    }
    button.disabled = true;
    showError(err, null);
    void onKey(key).then((problem) => {
      button.disabled = false;
      if (problem) {
        showError(err, problem);
        input.select();
        input.focus();
      }
    });
  });
  queueMicrotask(() => input.focus());
  return { title: "Sign in", el: h("div", { class: "page narrow" }, form), dispose() {} };
}
