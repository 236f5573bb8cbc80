# Build a static binary, ship it on a distroless base as a non-root user.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/modelsplit ./cmd/modelsplit

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/modelsplit /usr/local/bin/modelsplit
COPY config/example.yaml /etc/modelsplit/config.yaml
USER nonroot:nonroot
# xDS, ext_proc, admin/metrics. The defaults bind to loopback; in a container
# set listen.* to 0.0.0.0 addresses (and admin.token_file) in the config.
EXPOSE 18000 18001 18002
ENTRYPOINT ["/usr/local/bin/modelsplit"]
CMD ["serve", "-config", "/etc/modelsplit/config.yaml"]
