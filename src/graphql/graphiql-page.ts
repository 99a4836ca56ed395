
const DEFAULT_QUERY = `# Diffgate GraphQL. Put your API key in the Headers tab below:
#   { "x-api-key": "..." }
# (or a session token from the login mutation: { "Authorization": "Bearer ..." }).
# Subscriptions run over graphql-ws on this same path, authenticated with the same headers.

query Me {
  me { username roles permissions }
}
`;

/*
 * Browsers cannot set headers on a WebSocket, and GraphiQL keeps its Headers tab for HTTP. This
 * shim copies the Headers tab into graphql-ws's connection_init payload, where Diffgate reads
 * credentials, so that subscriptions work from the page without putting a key in its URL.
 */
const WS_HEADERS_SHIM = `<script>
(function () {
  function currentHeaders() {
    try {
      var tabs = JSON.parse(localStorage.getItem("graphiql:tabState") || "null");
      var tab = tabs && tabs.tabs && tabs.tabs[tabs.activeTabIndex];
      var text = (tab && tab.headers) || localStorage.getItem("graphiql:headers") || "{}";
      var parsed = JSON.parse(text);
      return parsed && typeof parsed === "object" ? parsed : {};
    } catch (e) { return {}; }
  }
  var Native = window.WebSocket;
  function Patched(url, protocols) {
    var socket = protocols === undefined ? new Native(url) : new Native(url, protocols);
    var send = socket.send.bind(socket);
    socket.send = function (data) {
      try {
        var message = JSON.parse(data);
        if (message && message.type === "connection_init") {
          message.payload = Object.assign({}, currentHeaders(), message.payload || {});
          data = JSON.stringify(message);
        }
      } catch (e) {}
      return send(data);
    };
    return socket;
  }
  Patched.prototype = Native.prototype;
  ["CONNECTING", "OPEN", "CLOSING", "CLOSED"].forEach(function (k) { Patched[k] = Native[k]; });
  window.WebSocket = Patched;
})();
</script>`;

let page: Promise<string> | undefined;

/**
 * The offline GraphiQL page (everything inlined; no CDN). Loaded on first request and rendered
 * once: the bundle costs about 27 MiB of heap, which processes that never serve it should not pay.
 */
export function graphiqlPage(): Promise<string> {
  page ??= import("@graphql-yoga/render-graphiql").then(({ renderGraphiQL }) => renderGraphiQL({
    endpoint: "/graphql",
    subscriptionsProtocol: "WS",
    title: "Diffgate GraphiQL",
    defaultQuery: DEFAULT_QUERY,
    headers: JSON.stringify({ "x-api-key": "" }, null, 2),
    isHeadersEditorEnabled: true,
  }).replace("<head>", `<head>${WS_HEADERS_SHIM}`));
  return page;
}
