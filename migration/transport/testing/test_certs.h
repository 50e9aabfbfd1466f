// File: migration/transport/testing/test_certs.h
//
// MakeTestCerts(): certificates for TLS tests, made at test time with the
// `openssl` command (EC P-256, valid two days), in Cloud Hypervisor's layout
// (tls_context.h):
//
//   <root>/good/   ca-cert.pem, server-{cert,key}.pem (names "localhost",
//                  127.0.0.1 and ::1), client-{cert,key}.pem: a source and a
//                  destination that trust each other.
//   <root>/rogue/  ca-cert.pem (the good CA: a rogue source can verify the
//                  destination) and client-{cert,key}.pem signed by another
//                  CA: a source the destination must refuse.
//
// Thread safety: call from one thread; it runs child processes.
#ifndef LIVEMIG_MIGRATION_TRANSPORT_TESTING_TEST_CERTS_H_
#define LIVEMIG_MIGRATION_TRANSPORT_TESTING_TEST_CERTS_H_

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace livemig::testing {

struct TestCerts {
  std::string good;   // Directory of the good source and destination.
  std::string rogue;  // Directory of a source signed by an unknown CA.
};

namespace test_certs_internal {

inline absl::Status Run(const std::string& command) {
  const std::string quiet = absl::StrCat(command, " >/dev/null 2>&1");
  if (std::system(quiet.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("test certificates: `", command, "` failed"));
  }
  return absl::OkStatus();
}

// A key and a certificate for `cn` in `dir`/`name`-{key,cert}.pem, signed
// by the CA at `ca_dir`/ca-{cert,key}.pem, with `san` as subjectAltName.
inline absl::Status Issue(const std::string& dir, const std::string& name,
                          const std::string& cn, const std::string& san,
                          const std::string& ca_dir) {
  const std::string base = absl::StrCat(dir, "/", name);
  const std::string ext = absl::StrCat(base, ".ext");
  std::ofstream(ext) << "subjectAltName=" << san << "\n"
                     << "extendedKeyUsage=serverAuth,clientAuth\n";
  if (absl::Status s = Run(absl::StrCat(
          "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ",
          base, "-key.pem -out ", base, ".csr -subj /CN=", cn));
      !s.ok()) {
    return s;
  }
  return Run(absl::StrCat("openssl x509 -req -in ", base, ".csr -CA ", ca_dir,
                          "/ca-cert.pem -CAkey ", ca_dir, "/ca-key.pem -CAcreateserial -days 2 -out ",
                          base, "-cert.pem -extfile ", ext));
}

inline absl::Status MakeCa(const std::string& dir, const std::string& cn) {
  return Run(absl::StrCat(
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ", dir,
      "/ca-key.pem -out ", dir, "/ca-cert.pem -days 2 -subj /CN=", cn));
}

}  // namespace test_certs_internal

// FailedPrecondition when `openssl` is not installed (tests skip then).
inline absl::StatusOr<TestCerts> MakeTestCerts(const std::string& root) {
  using namespace test_certs_internal;
  if (std::system("openssl version >/dev/null 2>&1") != 0) {
    return absl::FailedPreconditionError("the openssl command is not installed");
  }
  TestCerts certs{absl::StrCat(root, "/good"), absl::StrCat(root, "/rogue")};
  const std::string other_ca = absl::StrCat(root, "/other-ca");
  for (const std::string& d : {certs.good, certs.rogue, other_ca}) {
    std::filesystem::create_directories(d);
  }
  if (absl::Status s = MakeCa(certs.good, "livemig-test-ca"); !s.ok()) return s;
  if (absl::Status s = MakeCa(other_ca, "livemig-other-ca"); !s.ok()) return s;
  if (absl::Status s = Issue(certs.good, "server", "localhost",
                             "DNS:localhost,IP:127.0.0.1,IP:::1", certs.good);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = Issue(certs.good, "client", "livemig-source", "DNS:livemig-source",
                             certs.good);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = Issue(certs.rogue, "client", "rogue-source", "DNS:rogue-source",
                             other_ca);
      !s.ok()) {
    return s;
  }
  std::filesystem::copy_file(absl::StrCat(certs.good, "/ca-cert.pem"),
                             absl::StrCat(certs.rogue, "/ca-cert.pem"));
  return certs;
}

}  // namespace livemig::testing

#endif  // LIVEMIG_MIGRATION_TRANSPORT_TESTING_TEST_CERTS_H_
