-- Certificates for the TLS and PROXY specs, made at run time with the
-- openssl command (nothing is checked in): loaded by those specs with
-- dofile. M.make(dir) makes them once in dir and returns their paths:
--   ca, ca_key            a CA, "glisten spec CA"
--   cert, key             localhost, signed by it (names localhost and
--                         127.0.0.1, as curl and s_client -verify_hostname
--                         check them)
--   other, other_key      other.test and *.wild.test, signed by it (SNI)
--   client, client_key    client1, signed by it, with a DNS and a URI name
--   stranger, stranger_key  a client of another CA ("glisten spec other CA")
--   expired, expired_key  a client signed by the CA, valid in January 2020
--   enc_key               the localhost key, encrypted (password PASSWORD)
-- Each command runs without the sanitizers' preload: openssl is not
-- instrumented, and LeakSanitizer would abort it at exit.
local M = { PASSWORD = "s3cret" }

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local SCRIPT = [=[
set -eu
cd "$1"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1"; }
ca() {
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -subj "/CN=$2" -days 30 -out "$1.pem"
}
# leaf NAME CN CA EXTENSIONS
leaf() {
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2/O=glisten spec" -out "$1.csr"
  printf '%s\n' "$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial \
    -days 30 -extfile "$1.ext" -out "$1.pem"
}
ca ca "glisten spec CA"
ca ca2 "glisten spec other CA"
leaf server localhost ca "subjectAltName=DNS:localhost,IP:127.0.0.1"
leaf other other.test ca "subjectAltName=DNS:other.test,DNS:*.wild.test"
leaf client client1 ca "subjectAltName=DNS:client1.test,URI:spiffe://glisten/client1
extendedKeyUsage=clientAuth"
leaf stranger stranger ca2 "extendedKeyUsage=clientAuth"
# openssl 3.0's x509 cannot date a certificate in the past; its ca command
# can (-startdate, -enddate), with a database of its own
key expired.key
openssl req -new -key expired.key -subj "/CN=expired/O=glisten spec" -out expired.csr
mkdir -p cadb
: >cadb/index.txt
echo 1000 >cadb/serial
cat >cadb/ca.cnf <<EOF
[ca]
default_ca = spec
[spec]
database = $PWD/cadb/index.txt
new_certs_dir = $PWD/cadb
serial = $PWD/cadb/serial
default_md = sha256
policy = any
[any]
commonName = supplied
organizationName = optional
EOF
openssl ca -config cadb/ca.cnf -batch -notext -cert ca.pem -keyfile ca.key \
  -startdate 20200101000000Z -enddate 20200201000000Z -in expired.csr -out expired.pem
openssl pkey -in server.key -aes256 -passout "pass:$2" -out server-enc.key
]=]

local function paths(dir)
  return {
    ca = dir .. "/ca.pem", ca_key = dir .. "/ca.key",
    cert = dir .. "/server.pem", key = dir .. "/server.key",
    other = dir .. "/other.pem", other_key = dir .. "/other.key",
    client = dir .. "/client.pem", client_key = dir .. "/client.key",
    stranger = dir .. "/stranger.pem", stranger_key = dir .. "/stranger.key",
    expired = dir .. "/expired.pem", expired_key = dir .. "/expired.key",
    enc_key = dir .. "/server-enc.key",
  }
end

-- Made once per folder, for every spec file that asks (each loads this
-- file anew): the folder's "made" file says they are there.
function M.make(dir)
  local done = io.open(dir .. "/made")
  if done then
    done:close()
    return paths(dir)
  end
  assert(os.execute("mkdir -p " .. quote(dir)))
  local script = dir .. "/make.sh"
  local f = assert(io.open(script, "w"))
  f:write(SCRIPT)
  f:close()
  local ok = os.execute(("env -u LD_PRELOAD sh %s %s %s >%s/make.log 2>&1"):format(
    quote(script), quote(dir), quote(M.PASSWORD), quote(dir)))
  if not ok then
    local log = io.open(dir .. "/make.log")
    error("making the certificates failed:\n" .. (log and log:read("a") or ""))
  end
  local p = paths(dir)
  -- the expired certificate really is: openssl itself refuses it
  local check = io.popen(("env -u LD_PRELOAD openssl verify -CAfile %s %s 2>&1"):format(
    quote(p.ca), quote(p.expired)))
  local out = check:read("a")
  check:close()
  assert(out:match("certificate has expired"), "the expired certificate verifies:\n" .. out)
  io.open(dir .. "/made", "w"):close()
  return p
end

-- What openssl says of a certificate file: `openssl x509 -noout ARGS`.
function M.x509(path, args)
  local f = io.popen(("env -u LD_PRELOAD openssl x509 -noout -in %s %s 2>&1"):format(
    quote(path), args))
  local out = f:read("a")
  f:close()
  return out
end

return M
