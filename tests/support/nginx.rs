//! nginx as an upstream: the server Magento usually runs behind, with its own reading of a
//! path (decode once, resolve dots, merge slashes). Started on a free loopback port in the
//! foreground with no master process, so it runs as the test's user and dies with the test.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, require, wait_until};

/// A running nginx serving a document root that a test fills.
pub struct Nginx {
    /// The port it listens on.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Nginx {
    /// Serves `files` (path under the root, contents) as static files.
    pub fn serve(files: &[(&str, &str)]) -> Self {
        require("nginx", "apt-get install nginx");
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        for (path, body) in files {
            let file = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
            std::fs::write(&file, body).expect("write file");
        }
        let port = free_port();
        let conf = dir.path().join("nginx.conf");
        let d = dir.path().display();
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log info;\nevents {{ worker_connections 256; }}\n\
                 http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n\
                 proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n\
                 uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                 server {{\n    listen 127.0.0.1:{port};\n    root {root};\n\
                 location / {{ try_files $uri =404; }}\n  }}\n}}\n",
                root = root.display(),
            ),
        )
        .expect("write nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        wait_until("nginx to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self { port, dir, child }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The request lines nginx logged, in order.
    pub fn requests(&self) -> Vec<String> {
        read_lines(&self.dir.path().join("access.log"))
            .into_iter()
            .filter_map(|l| l.split('"').nth(1).map(str::to_string))
            .collect()
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
