// The drain benchmarks' receiver when node exists: reads each request's body and
// answers 200 "{}", optionally after DELAY_MS. It prints its port once it listens.
const http = require("http");
const delay = Number(process.env.DELAY_MS || 0);
const server = http.createServer((req, res) => {
  req.on("data", () => {});
  req.on("end", () => {
    const answer = () => {
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": 2 });
      res.end("{}");
    };
    if (delay > 0) setTimeout(answer, delay);
    else answer();
  });
});
server.keepAliveTimeout = 60000;
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
