//! Task events to containerd, sent in order from one thread so a ttrpc handler never waits
//! on containerd. After a containerd restart the old connection is dead: the publisher
//! reconnects to containerd's ttrpc address (`TTRPC_ADDRESS`) and sends the event again; an
//! event that still cannot be sent is logged and dropped (containerd re-reads the task's state
//! when it reconnects to the shim).

use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;

use containerd_shim::event::Event;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::publisher::RemotePublisher;

/// Makes (another copy of) an event, for a retry.
type Make = Box<dyn Fn() -> Box<dyn MessageDyn> + Send>;

/// Queue of events for containerd.
pub struct Events {
    tx: Mutex<Sender<(String, Make)>>,
}

impl Events {
    pub fn new(publisher: RemotePublisher, namespace: String) -> Self {
        let (tx, rx) = channel::<(String, Make)>();
        std::thread::spawn(move || {
            let mut publisher = publisher;
            let address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
            for (topic, make) in rx {
                let ctx = containerd_shim::protos::ttrpc::context::Context::default();
                if publisher.publish(ctx, &topic, &namespace, make()).is_ok() {
                    continue;
                }
                match RemotePublisher::new(&address) {
                    Ok(p) => publisher = p,
                    Err(e) => {
                        log::warn!("publish {topic}: cannot reconnect to containerd: {e}");
                        continue;
                    }
                }
                let ctx = containerd_shim::protos::ttrpc::context::Context::default();
                if let Err(e) = publisher.publish(ctx, &topic, &namespace, make()) {
                    log::warn!("publish {topic}: {e}");
                }
            }
        });
        Self { tx: Mutex::new(tx) }
    }

    pub fn send<E: Event + Clone + Send + 'static>(&self, event: E) {
        let topic = event.topic();
        let make: Make = Box::new(move || Box::new(event.clone()));
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send((topic, make));
        }
    }
}
